#!/usr/bin/env python3
"""everywhere.py: an Agora framework in Python, straight on the gRPC protocol.

It keeps one copy of a command running on every agent whose labels match, like the Rust example
in frameworks/examples/everywhere, and shows what any framework does: subscribe, look at offers,
launch or decline, acknowledge status updates, and re-subscribe (keeping its framework id, so its
tasks survive) when the connection to the master drops.

    pip install -r requirements.txt
    python3 everywhere.py --master 127.0.0.1:5050 --cmd 'echo hello from $HOST; sleep 600'
    python3 everywhere.py --cmd 'exec httpd -f -p $PORT0' --ports 1 --image agora-sample:local \\
        --label zone=a

Read it top to bottom; README.md next to it walks through it.
"""

import argparse
import logging
import os
import signal
import sys
import threading
import time
import uuid

try:
    import grpc
except ImportError:
    sys.exit("everywhere.py: grpcio is missing: pip install -r requirements.txt")

import agora_proto

log = logging.getLogger("everywhere")

# Task states after which a copy is gone for good (Mesos semantics), plus UNREACHABLE: the agent
# is away, so we stop counting on that copy (a partition-aware framework decides for itself).
TERMINAL = {
    "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR",
    "TASK_LOST", "TASK_DROPPED", "TASK_GONE", "TASK_UNREACHABLE",
}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Keep one copy of a command running on every matching agent.")
    env = os.environ.get
    parser.add_argument("--master", default=env("AGORA_MASTER", "127.0.0.1:5050"),
                        help="master address, host:port or http://host:port (AGORA_MASTER)")
    parser.add_argument("--name", default="everywhere-py", help="framework name")
    parser.add_argument("--cmd", required=True, help="shell command; $PORT0 is the first host port")
    parser.add_argument("--image", default="", help="Docker image; empty runs a plain process")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="only agents with this label (repeatable, all must match)")
    parser.add_argument("--cpus", type=float, default=0.1, help="cores per copy")
    parser.add_argument("--mem", type=float, default=32.0, help="memory per copy, MiB")
    parser.add_argument("--ports", type=int, default=0, help="host ports per copy")
    parser.add_argument("--teardown-on-exit", action="store_true",
                        help="on Ctrl-C/SIGTERM, tear the framework down (its copies are killed)")
    parser.add_argument("--proto", default=None, help="directory holding agora/v1/agora.proto")
    args = parser.parse_args(argv)
    labels = {}
    for label in args.label:
        key, sep, value = label.partition("=")
        if not sep or not key:
            parser.error(f"--label {label!r}: expected KEY=VALUE")
        labels[key] = value
    args.labels = labels
    if args.cpus <= 0 or args.mem <= 0 or args.ports < 0:
        parser.error("--cpus and --mem must be positive, --ports zero or more")
    args.master = args.master.removeprefix("http://")
    return args


class Everywhere:
    """The framework: its state (at most one copy per agent) and its answers to events."""

    def __init__(self, args, pb, stub):
        self.args = args
        self.pb = pb
        self.stub = stub
        self.framework_id = ""  # assigned by the master on the first Subscribed
        self.stream_id = ""  # changes with every subscription; calls must carry it
        self.copies = {}  # agent_id -> {"task_id": ..., "state": ...}

    # -- calls to the master -------------------------------------------------------------

    def header(self):
        return self.pb.CallHeader(framework_id=self.framework_id, stream_id=self.stream_id)

    def decline(self, offer_id, refuse_seconds):
        self.stub.Decline(self.pb.DeclineRequest(
            header=self.header(), offer_ids=[offer_id],
            filters=self.pb.Filters(refuse_seconds=refuse_seconds)))

    def launch(self, offer, task):
        operation = self.pb.Operation(launch=self.pb.Launch(tasks=[task]))
        self.stub.Accept(self.pb.AcceptRequest(
            header=self.header(), offer_ids=[offer.id], operations=[operation]))

    def teardown(self):
        """Removes the framework from the master, which kills its copies."""
        try:
            self.stub.Teardown(self.pb.TeardownRequest(header=self.header()), timeout=5)
            log.info("framework torn down")
        except grpc.RpcError as error:
            log.warning("teardown failed: %s %s", error.code(), error.details())

    # -- building a task from an offer -----------------------------------------------------

    def wants(self, offer):
        """An agent is wanted when it has every required label and no live copy yet."""
        labels_match = all(offer.labels.get(k) == v for k, v in self.args.labels.items())
        return labels_match and offer.agent_id not in self.copies

    def task_for(self, offer):
        """A TaskInfo taking cpus, mem and ports from the offer, or None (and why)."""
        pb = self.pb
        scalars = {r.name: r.scalar for r in offer.resources if r.WhichOneof("value") == "scalar"}
        if scalars.get("cpus", 0) < self.args.cpus or scalars.get("mem", 0) < self.args.mem:
            return None, f"needs cpus:{self.args.cpus};mem:{self.args.mem}, offer has {scalars}"
        free_ports = [port
                      for r in offer.resources if r.name == "ports" and r.HasField("ranges")
                      for span in r.ranges.range
                      for port in range(span.begin, span.end + 1)][: self.args.ports]
        if len(free_ports) < self.args.ports:
            return None, f"needs {self.args.ports} ports, offer has {len(free_ports)}"

        resources = [
            pb.Resource(name="cpus", scalar=self.args.cpus),
            pb.Resource(name="mem", scalar=self.args.mem),
        ]
        if free_ports:
            ranges = pb.Ranges(range=[pb.Range(begin=p, end=p) for p in free_ports])
            resources.append(pb.Resource(name="ports", ranges=ranges))
        name = f"{self.args.name}-{offer.hostname}"
        task = pb.TaskInfo(
            task_id=f"{name}.{uuid.uuid4()}",
            name=name,
            agent_id=offer.agent_id,
            resources=resources,
            command=pb.CommandInfo(shell=True, value=self.args.cmd),
        )
        if self.args.image:
            task.container.CopyFrom(pb.ContainerInfo(image=self.args.image))
        return task, None

    # -- events ------------------------------------------------------------------------------

    def on_subscribed(self, subscribed):
        reconnected = bool(self.framework_id)
        self.framework_id = subscribed.framework_id
        self.stream_id = subscribed.stream_id
        log.info("subscribed as %s (reconnected: %s)", self.framework_id, reconnected)
        if reconnected:
            # The master may know more than we do: ask for the latest state of all our tasks.
            self.stub.Reconcile(self.pb.ReconcileRequest(header=self.header()))

    def on_offers(self, offers):
        for offer in offers:
            if not self.wants(offer):
                # Not interested: do not offer this agent again for a minute. We revive when a
                # copy ends, which clears the filter.
                self.decline(offer.id, 60.0)
                continue
            task, why_not = self.task_for(offer)
            if task is None:
                log.warning("offer from %s does not fit: %s", offer.hostname, why_not)
                self.decline(offer.id, 60.0)
                continue
            log.info("launching %s on %s", task.task_id, offer.hostname)
            self.copies[offer.agent_id] = {"task_id": task.task_id, "state": "TASK_STAGING"}
            self.launch(offer, task)

    def on_update(self, status):
        state = self.pb.TaskState.Name(status.state)
        log.info("task %s: %s %s", status.task_id, state, status.message)
        # Updates carrying a uuid must be acknowledged, or the agent resends them.
        if status.uuid:
            self.stub.Acknowledge(self.pb.AcknowledgeRequest(
                header=self.header(), agent_id=status.agent_id,
                task_id=status.task_id, uuid=status.uuid))
        copy = self.copies.get(status.agent_id)
        if copy is None or copy["task_id"] != status.task_id:
            return
        if state in TERMINAL:
            # The copy is gone: forget it and ask for offers again so that it is relaunched.
            del self.copies[status.agent_id]
            self.stub.Revive(self.pb.ReviveRequest(header=self.header()))
        else:
            copy["state"] = state

    def handle(self, event):
        kind = event.WhichOneof("event")
        if kind == "subscribed":
            self.on_subscribed(event.subscribed)
        elif kind == "offers":
            self.on_offers(event.offers.offers)
        elif kind == "update":
            self.on_update(event.update.status)
        elif kind == "rescind":
            log.info("offer %s rescinded", event.rescind.offer_id)
        elif kind == "failure":
            log.warning("agent %s lost: %s", event.failure.agent_id, event.failure.message)
        elif kind == "error":
            raise SystemExit(f"everywhere.py: the master ended the framework: {event.error.message}")
        # heartbeat: nothing to do; receiving it is what matters (see Watchdog).


class Watchdog:
    """Cancels the subscription when the master stays silent for three heartbeat intervals."""

    def __init__(self):
        self.call = None
        self.last_event = time.monotonic()
        self.limit = 45.0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            time.sleep(1.0)
            call = self.call
            if call is not None and time.monotonic() - self.last_event > self.limit:
                log.warning("no heartbeat for %.0f s: reconnecting", self.limit)
                call.cancel()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        pb, services = agora_proto.load(args.proto)
    except agora_proto.ProtoError as error:
        sys.exit(f"everywhere.py: {error}")

    channel = grpc.insecure_channel(args.master)
    framework = Everywhere(args, pb, services.SchedulerServiceStub(channel))
    watchdog = Watchdog()
    stopping = threading.Event()

    def stop(signum, _frame):
        log.info("signal %d: stopping", signum)
        stopping.set()
        if args.teardown_on_exit and framework.stream_id:
            # Before closing the stream: a call naming a closed stream would be refused.
            framework.teardown()
        if watchdog.call is not None:
            watchdog.call.cancel()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    backoff = 0.5
    while not stopping.is_set():
        # Step 1: subscribe. The first time without an id; afterwards with the id the master
        # gave us, within the failover timeout, so our running copies stay ours.
        info = pb.FrameworkInfo(
            id=framework.framework_id, name=args.name, failover_timeout_seconds=300.0,
            capabilities=[pb.PARTITION_AWARE])
        call = framework.stub.Subscribe(pb.SubscribeRequest(framework=info))
        watchdog.call, watchdog.last_event = call, time.monotonic()
        try:
            # Step 2: react to events, one at a time, until the stream ends.
            for event in call:
                watchdog.last_event = time.monotonic()
                if event.WhichOneof("event") == "subscribed":
                    watchdog.limit = 3 * max(event.subscribed.heartbeat_interval_seconds, 1.0)
                    backoff = 0.5
                framework.handle(event)
        except grpc.RpcError as error:
            if stopping.is_set():
                break
            log.warning("subscription ended: %s %s", error.code(), error.details())
        # Step 3: the master went away (or restarted): try again, a little later each time.
        if stopping.wait(backoff):
            break
        backoff = min(backoff * 2, 10.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
