#!/usr/bin/env bash
# A whole Agora cluster on this machine, for a first look: a master, one agent and a sample
# app (busybox httpd kept running by the `everywhere` example framework). State lives under
# .agora-local/ (or $AGORA_LOCAL_DIR) and is reused by the next run. Ctrl-C stops everything.
#
# The agent uses the local Docker Engine when one answers (the sample image is built locally
# FROM scratch with a static busybox, nothing is pulled) and the process runtime otherwise.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=${AGORA_LOCAL_DIR:-$root/.agora-local}
master_port=${AGORA_LOCAL_MASTER_PORT:-5050}
agent_port=${AGORA_LOCAL_AGENT_PORT:-5051}
master_url="http://127.0.0.1:${master_port}"
mkdir -p "$state/logs" "$state/www"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

say "building master, agent and the example framework"
(cd "$root" && cargo build --quiet -p agora-master -p agora-agent -p agora-example-everywhere --bins)
bin="$root/target/debug"

busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
  [ -x "$candidate" ] && { busybox=$candidate; break; }
done

cat > "$state/www/index.html" <<'HTML'
<h1>Hello from Agora</h1>
<p>This page is served by a task the master placed on your agent.</p>
HTML

runtime=process
image=""
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
  && [ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  runtime=docker
  image=agora-sample:local
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    say "building the sample image $image from $busybox (nothing is pulled)"
    context=$(mktemp -d)
    mkdir -p "$context/rootfs/bin" "$context/rootfs/www"
    cp "$busybox" "$context/rootfs/bin/busybox"
    for tool in sh httpd sleep cat echo ls; do ln -s busybox "$context/rootfs/bin/$tool"; done
    cp "$state/www/index.html" "$context/rootfs/www/index.html"
    printf 'FROM scratch\nCOPY rootfs /\nCMD ["/bin/sh"]\n' > "$context/Dockerfile"
    docker build --quiet -t "$image" "$context" >/dev/null
    rm -rf "$context"
  fi
  app_cmd='exec httpd -f -p $PORT0 -h /www'
elif [ -n "$busybox" ]; then
  app_cmd="exec $busybox httpd -f -p \$PORT0 -h $state/www"
elif command -v python3 >/dev/null 2>&1; then
  app_cmd="cd $state/www && exec python3 -m http.server \$PORT0"
else
  echo "neither busybox nor python3 is installed: the sample app needs one of them" >&2
  exit 1
fi
if [ "$runtime" = docker ]; then
  say "runtime: docker (local engine answers)"
else
  say "runtime: process (no Docker Engine, or no static busybox for the sample image)"
fi

pids=()
stop_all() {
  trap - INT TERM EXIT
  say "stopping"
  # The framework first (it tears itself down, so the master kills the sample app), then the
  # agent, then the master.
  stop_pid() {
    [ -n "${1:-}" ] || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  }
  stop_pid "${pids[2]:-}"
  # Give the agent time to carry out the kills the teardown caused.
  for _ in $(seq 1 150); do
    curl -fs "http://127.0.0.1:${agent_port}/state" 2>/dev/null \
      | python3 -c 'import json,sys; sys.exit(0 if not json.load(sys.stdin).get("tasks") else 1)' \
      2>/dev/null && break
    sleep 0.1
  done
  stop_pid "${pids[1]:-}"
  stop_pid "${pids[0]:-}"
  wait 2>/dev/null || true
  say "stopped; state kept in $state"
}
trap stop_all INT TERM EXIT

# Each daemon's output, prefixed with its name.
run_prefixed() {
  local name=$1; shift
  "$@" > >(sed -u "s/^/[$name] /" | tee -a "$state/logs/$name.log") 2>&1 &
  pids+=("$!")
}

run_prefixed master "$bin/master" --listen "127.0.0.1:${master_port}" --work-dir "$state/master"
for _ in $(seq 1 100); do
  curl -fs "$master_url/health" >/dev/null 2>&1 && break
  sleep 0.1
done

run_prefixed agent "$bin/agent" --master "$master_url" --listen "127.0.0.1:${agent_port}" \
  --work-dir "$state/agent" --runtime "$runtime" --hostname "$(hostname)" --label zone=local

everywhere_args=(--master "$master_url" --name sample-web --cmd "$app_cmd" --ports 1
  --cpus 0.1 --mem 32 --teardown-on-exit)
[ -n "$image" ] && everywhere_args+=(--image "$image")
run_prefixed framework "$bin/everywhere" "${everywhere_args[@]}"

say "waiting for the sample app"
app_url=""
for _ in $(seq 1 300); do
  port=$(curl -fs "$master_url/state/tasks" 2>/dev/null | python3 -c '
import json, sys
for task in json.load(sys.stdin):
    ports = task.get("resources", {}).get("ports", "")
    if task.get("state") == "TASK_RUNNING" and ports:
        print(ports.strip("[]").split("-")[0])
        break
' 2>/dev/null || true)
  if [ -n "$port" ] && curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1; then
    app_url="http://127.0.0.1:$port/"
    break
  fi
  sleep 0.2
done

if [ -z "$app_url" ]; then
  echo "the sample app did not come up; logs are in $state/logs" >&2
  exit 1
fi

cat <<EOF

  Agora is running ($runtime runtime), state in $state

  sample app     $app_url
  master state   $master_url/state
  metrics        $master_url/metrics
  agent state    http://127.0.0.1:${agent_port}/state

  Try:
    curl $app_url
    curl -s $master_url/state | python3 -m json.tool
    cargo run -p agora-example-everywhere -- --master $master_url --name echo --cmd 'echo hi; sleep 30'

  Ctrl-C stops everything.
EOF

if [ "${AGORA_LOCAL_EXIT_WHEN_READY:-0}" = 1 ]; then
  exit 0
fi
wait
