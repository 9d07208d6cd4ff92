# Shared by scripts/test, scripts/demo and scripts/bench: install what is missing, idempotently.
# Sourced, not executed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEPLOYER_VENV:-$ROOT/.venv}"
APT_PACKAGES=(docker.io openssh-server openssh-client docker-registry iproute2 nftables iptables
              busybox-static zstd pigz util-linux procps kmod python3 curl git)

say() { printf '==> %s\n' "$*" >&2; }

ensure_apt() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        say "installing Debian packages: ${missing[*]}"
        local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

ensure_venv() {
    local extras="${1:-test}"
    local stamp="$VENV/.deployer-stamp"
    local want
    want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)-$extras-compat"
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating venv $VENV"
        python3 -m venv "$VENV"
    fi
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        say "installing deployer and its $extras dependencies into $VENV"
        "$VENV/bin/pip" install -q --upgrade pip >/dev/null
        # compat: a plain path in a .pth file, as a regular install's start-up. The default editable
        # mode installs an import hook that costs every `deploy` ~25 ms (pathlib and friends) before
        # any code of ours; setuptools calls compat transitional, so without it, the default.
        "$VENV/bin/pip" install -q -e "$ROOT[$extras]" --config-settings editable_mode=compat 2>/dev/null \
            || "$VENV/bin/pip" install -q -e "$ROOT[$extras]"
        echo "$want" > "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}
