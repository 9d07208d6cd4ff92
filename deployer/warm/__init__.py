"""Warm start: a re-ship answers without paying Python's start-up and imports each time.

`deploy` (launch.main) hands its argv, working dir, environment and its stdin, stdout and stderr
to a forking server that has already imported the CLI, the docker SDK and paramiko; the server
forks a child that runs the command exactly as the cold process would, and the exit code comes
back. Mercurial's chg works the same way. With no server (or a stale one), `deploy` runs in its
own process and starts one in the background for the next command. DEPLOY_WARM=0 turns it off.

  launch  the `deploy` executable: try the server, else run cold (standard library only)
  wire    the socket's place and the messages (standard library only)
  server  the forking server and the child's set-up
"""
