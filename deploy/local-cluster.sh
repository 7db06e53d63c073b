#!/usr/bin/env bash
# A whole Agora cluster on this machine, for a first look: a master, one agent, svcframework and
# batchframework, with the sample app deploy/examples/hello.json deployed through svcframework.
# State lives under .agora-local/ (or $AGORA_LOCAL_DIR) and is reused by the next run.
# Ctrl-C stops everything, the sample app's container or process included.
#
# The agent uses the local Docker Engine when one answers (the sample image is built locally
# FROM scratch with a static busybox, nothing is pulled) and the process runtime otherwise.
# AGORA_LOCAL_EXIT_WHEN_READY=1 stops everything as soon as the sample app answers (for scripts);
# AGORA_LOCAL_RUNTIME=process|docker picks the runtime instead of detecting it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=${AGORA_LOCAL_DIR:-$root/.agora-local}
master_port=${AGORA_LOCAL_MASTER_PORT:-5050}
agent_port=${AGORA_LOCAL_AGENT_PORT:-5051}
svc_port=${AGORA_LOCAL_SVC_PORT:-8080}
batch_port=${AGORA_LOCAL_BATCH_PORT:-8090}
ports=${AGORA_LOCAL_TASK_PORTS:-31000-31099}
master_url="http://127.0.0.1:${master_port}"
svc_url="http://127.0.0.1:${svc_port}"
batch_url="http://127.0.0.1:${batch_port}"
mkdir -p "$state/logs" "$state/www"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'local-cluster: %s\n' "$*" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || fail "curl is needed"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed (to read JSON)"

say "building master, agent, svcframework, batchframework and the example framework"
(cd "$root" && cargo build --quiet -p agora-master -p agora-agent -p agora-svc -p agora-batch \
  -p agora-example-everywhere --bins)
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin="$target_dir/debug"

busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
  [ -x "$candidate" ] && { busybox=$candidate; break; }
done

cat > "$state/www/index.html" <<'HTML'
<h1>Hello from Agora</h1>
<p>This page is served by an instance svcframework placed on your agent.</p>
HTML

runtime=process
wanted_runtime=${AGORA_LOCAL_RUNTIME:-auto}   # auto, docker or process
if [ "$wanted_runtime" != process ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
  && [ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
  runtime=docker
  image=agora-sample:local
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    say "building the sample image $image from $busybox (nothing is pulled)"
    context=$(mktemp -d)
    mkdir -p "$context/rootfs/bin" "$context/rootfs/www"
    cp "$busybox" "$context/rootfs/bin/busybox"
    for tool in sh httpd sleep cat echo ls date; do ln -s busybox "$context/rootfs/bin/$tool"; done
    cp "$state/www/index.html" "$context/rootfs/www/index.html"
    printf 'FROM scratch\nCOPY rootfs /\nCMD ["/bin/sh"]\n' > "$context/Dockerfile"
    docker build --quiet -t "$image" "$context" >/dev/null
    rm -rf "$context"
  fi
  say "runtime: docker (the local engine answers)"
  cp "$root/deploy/examples/hello.json" "$state/hello.json"
else
  [ "$wanted_runtime" = docker ] && fail "AGORA_LOCAL_RUNTIME=docker, but no Docker Engine answers or no static busybox"
  if [ -n "$busybox" ]; then
    app_cmd="exec $busybox httpd -f -p \$PORT0 -h $state/www"
  else
    app_cmd="cd $state/www && exec python3 -m http.server \$PORT0"
  fi
  if [ "$wanted_runtime" = process ]; then
    say "runtime: process (AGORA_LOCAL_RUNTIME=process)"
  else
    say "runtime: process (no Docker Engine, or no static busybox for the sample image)"
  fi
  # The same app without the container: the process runtime runs the command on the host.
  APP_CMD="$app_cmd" python3 - "$root/deploy/examples/hello.json" "$state/hello.json" <<'PY'
import json, os, sys
app = json.load(open(sys.argv[1]))
app.pop("container", None)
app["cmd"] = os.environ["APP_CMD"]
json.dump(app, open(sys.argv[2], "w"), indent=2)
PY
fi

pids=()
names=()
agent_id=""
stop_all() {
  trap - INT TERM EXIT
  say "stopping"
  stop_pid() {
    [ -n "${1:-}" ] || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
  }
  # Frameworks first (they keep their apps and jobs for the next run), then the agent, which
  # stops its tasks, then the master.
  for index in 4 3 2 1 0; do stop_pid "${pids[$index]:-}"; done
  wait 2>/dev/null || true
  # Exited containers of this agent would be removed by it a little later; it is gone now.
  if [ "$runtime" = docker ] && [ -n "$agent_id" ]; then
    docker ps -aq --filter "label=agora.agent_id=$agent_id" | xargs -r docker rm -f >/dev/null 2>&1 || true
  fi
  say "stopped; state kept in $state (run again to resume)"
}
trap stop_all INT TERM EXIT

# Each daemon's output, prefixed with its name and kept in $state/logs.
run_prefixed() {
  local name=$1; shift
  "$@" > >(sed -u "s/^/[$name] /" | tee -a "$state/logs/$name.log") 2>&1 &
  pids+=("$!")
  names+=("$name")
}

wait_for() {
  local what=$1 url=$2
  for _ in $(seq 1 150); do
    curl -fs "$url" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "$what did not answer at $url; logs are in $state/logs"
}

run_prefixed master "$bin/master" --listen "127.0.0.1:${master_port}" --work-dir "$state/master"
wait_for master "$master_url/health"

run_prefixed agent "$bin/agent" --master "$master_url" --listen "127.0.0.1:${agent_port}" \
  --work-dir "$state/agent" --runtime "$runtime" --hostname "$(hostname)" --label zone=local \
  --resources "ports:[$ports]" --kill-tasks-on-shutdown --remove-exited-after 5

for _ in $(seq 1 100); do
  agent_id=$(curl -fs "http://127.0.0.1:${agent_port}/state" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("agent_id") or "")' 2>/dev/null || true)
  [ -n "$agent_id" ] && break
  sleep 0.1
done

run_prefixed svcframework "$bin/svcframework" serve --master "$master_url" \
  --listen "127.0.0.1:${svc_port}" --work-dir "$state/svc"
run_prefixed batchframework "$bin/batchframework" serve --master "$master_url" \
  --listen "127.0.0.1:${batch_port}" --work-dir "$state/batch"
wait_for svcframework "$svc_url/ping"
wait_for batchframework "$batch_url/ping"

say "deploying the sample app ($state/hello.json)"
AGORA_SVC_URL=$svc_url "$bin/svcframework" deploy "$state/hello.json" --wait --timeout 180 \
  || fail "the sample app did not deploy; see 'svcframework status /hello' and $state/logs"

app_url=""
for _ in $(seq 1 150); do
  port=$(AGORA_SVC_URL=$svc_url "$bin/svcframework" tasks /hello -o json 2>/dev/null | python3 -c '
import json, sys
for task in json.load(sys.stdin).get("tasks", []):
    if task.get("state") == "TASK_RUNNING" and task.get("ports"):
        print(task["ports"][0])
        break
' 2>/dev/null || true)
  if [ -n "$port" ] && curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1; then
    app_url="http://127.0.0.1:$port/"
    break
  fi
  sleep 0.2
done
[ -n "$app_url" ] || fail "the sample app does not answer; logs are in $state/logs"

cat <<EOF

  Agora is running ($runtime runtime), state in $state

  $(AGORA_SVC_URL=$svc_url "$bin/svcframework" list | sed '2,$s/^/  /')

  sample app       $app_url
  svcframework     $svc_url/v2/apps      (queue: $svc_url/v2/queue, events: $svc_url/v2/events)
  batchframework   $batch_url/v1/jobs
  master state     $master_url/state     (metrics: $master_url/metrics)
  agent state      http://127.0.0.1:${agent_port}/state
  logs             $state/logs/

  Try:
    export PATH=$bin:\$PATH AGORA_SVC_URL=$svc_url AGORA_BATCH_URL=$batch_url
    curl $app_url
    svcframework status /hello
    svcframework scale /hello 2      # hostname:UNIQUE on one agent: 'status' and /v2/queue say why one waits
    svcframework scale /hello 1 --force
    svcframework restart /hello --wait
    batchframework submit deploy/examples/job.json && batchframework runs nightly-report
    cargo run -p agora-example-everywhere -- --master $master_url --name echo --cmd 'echo hi; sleep 30'

  Ctrl-C stops everything.
EOF

if [ "${AGORA_LOCAL_EXIT_WHEN_READY:-0}" = 1 ]; then
  exit 0
fi
wait
