# Shell helpers shared by the bench/ scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Wait up to $1 seconds for the 1-minute load average to drop below $2 (default 0.5).
wait_quiet() {
  local end=$((SECONDS + $1)) below=${2:-0.5}
  while [ $SECONDS -lt $end ] && awk -v b="$below" '{exit !($1 >= b)}' /proc/loadavg; do sleep 10; done
}

# Stop the given PIDs: TERM all, up to 5 s each to exit, then KILL.
stop_pids() {
  local p
  for p in "$@"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null; done
  for p in "$@"; do
    [ -n "$p" ] || continue
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  return 0
}
