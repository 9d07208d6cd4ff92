#!/bin/sh
# deployer testbed sample workload.
#   sample [run]        print what it sees (GPUs, args) and exit 0
#   sample sleep [S]    run for S seconds (default: forever); exits at once on SIGTERM
#   sample ticks [N]    print "tick I" once a second, N times (default 5), then exit 0
#   sample fail [CODE]  exit with CODE (default 1)
#   sample env          print the environment
# Every mode first appends a line to /data/sample.log when /data is mounted.
trap 'echo "sample: stopping"; exit 0' TERM INT
mode="${1:-run}"
[ $# -gt 0 ] && shift
gpus="${NVIDIA_VISIBLE_DEVICES:-none}"
echo "sample $(cat /opt/sample/VERSION): host=$(hostname) mode=$mode NVIDIA_VISIBLE_DEVICES=$gpus args=$*"
if [ -d /data ]; then
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname) mode=$mode gpus=$gpus" >> /data/sample.log
fi
case "$mode" in
    run) exit 0 ;;
    sleep)
        if [ -n "$1" ]; then sleep "$1" & else sleep 2147483647 & fi
        wait $!
        echo "sample: done" ;;
    ticks)
        i=1
        while [ "$i" -le "${1:-5}" ]; do echo "tick $i"; sleep 1 & wait $!; i=$((i + 1)); done ;;
    fail) echo "sample: failing with exit code ${1:-1}" >&2; exit "${1:-1}" ;;
    env) env | sort ;;
    *) echo "sample: unknown mode $mode (run|sleep|ticks|fail|env)" >&2; exit 2 ;;
esac
