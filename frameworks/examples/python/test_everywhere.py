"""Unit tests of everywhere.py's decisions, without a master: a fake stub records the calls.

    python3 -m unittest -v test_everywhere
"""

import contextlib
import io
import unittest

import agora_proto
import everywhere

pb, _services = agora_proto.load()


class FakeStub:
    """Records every call as (method name, request)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(request, **_kwargs):
            self.calls.append((name, request))
            return None

        return call

    def names(self):
        return [name for name, _ in self.calls]


def offer(agent="agent-1", hostname="node-1", cpus=2.0, mem=1024.0, ports=((31000, 31001),),
          labels=None):
    resources = [pb.Resource(name="cpus", scalar=cpus), pb.Resource(name="mem", scalar=mem)]
    if ports:
        ranges = pb.Ranges(range=[pb.Range(begin=b, end=e) for b, e in ports])
        resources.append(pb.Resource(name="ports", ranges=ranges))
    return pb.Offer(id=f"offer-{agent}", agent_id=agent, hostname=hostname,
                    resources=resources, labels=labels or {})


def framework(*argv):
    args = everywhere.parse_args(["--cmd", "sleep 60", *argv])
    stub = FakeStub()
    fw = everywhere.Everywhere(args, pb, stub)
    fw.framework_id, fw.stream_id = "fw-1", "stream-1"
    return fw, stub


class ParseArgs(unittest.TestCase):
    def test_labels_and_master_url(self):
        args = everywhere.parse_args(
            ["--cmd", "x", "--label", "zone=a", "--label", "disk=ssd", "--master",
             "http://m:5050"])
        self.assertEqual(args.labels, {"zone": "a", "disk": "ssd"})
        self.assertEqual(args.master, "m:5050")

    def refused(self, argv, reason):
        stderr = io.StringIO()
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(stderr):
            everywhere.parse_args(argv)
        self.assertIn(reason, stderr.getvalue())

    def test_bad_label_is_refused(self):
        self.refused(["--cmd", "x", "--label", "zone"], "--label 'zone': expected KEY=VALUE")

    def test_non_positive_resources_are_refused(self):
        self.refused(["--cmd", "x", "--cpus", "0"], "--cpus and --mem must be positive")


class Offers(unittest.TestCase):
    def test_launches_on_a_matching_agent_with_ports_across_ranges(self):
        fw, stub = framework("--ports", "3", "--label", "zone=a", "--image", "img:1")
        fw.on_offers([offer(ports=((31000, 31001), (31005, 31009)), labels={"zone": "a"})])
        self.assertEqual(stub.names(), ["Accept"])
        request = stub.calls[0][1]
        self.assertEqual(request.header.stream_id, "stream-1")
        task = request.operations[0].launch.tasks[0]
        ports = [r for r in task.resources if r.name == "ports"][0]
        self.assertEqual([(r.begin, r.end) for r in ports.ranges.range],
                         [(31000, 31000), (31001, 31001), (31005, 31005)])
        self.assertEqual(task.container.image, "img:1")
        self.assertTrue(task.command.shell)
        self.assertTrue(task.task_id.startswith("everywhere-py-node-1."))
        self.assertIn("agent-1", fw.copies)

    def test_declines_other_labels_and_agents_with_a_copy(self):
        fw, stub = framework("--label", "zone=a")
        fw.on_offers([offer(labels={"zone": "b"})])
        fw.copies["agent-2"] = {"task_id": "t", "state": "TASK_RUNNING"}
        fw.on_offers([offer(agent="agent-2", labels={"zone": "a"})])
        self.assertEqual(stub.names(), ["Decline", "Decline"])
        self.assertEqual(stub.calls[0][1].filters.refuse_seconds, 60.0)

    def test_declines_an_offer_that_is_too_small(self):
        fw, stub = framework("--mem", "2048")
        fw.on_offers([offer(mem=1024.0)])
        self.assertEqual(stub.names(), ["Decline"])
        fw, stub = framework("--ports", "3")
        fw.on_offers([offer(ports=((31000, 31001),))])
        self.assertEqual(stub.names(), ["Decline"])
        self.assertEqual(fw.copies, {})


class Updates(unittest.TestCase):
    def test_acknowledges_and_relaunches_after_a_terminal_update(self):
        fw, stub = framework()
        fw.copies["agent-1"] = {"task_id": "t-1", "state": "TASK_STAGING"}
        fw.on_update(pb.TaskStatus(task_id="t-1", agent_id="agent-1",
                                   state=pb.TASK_RUNNING, uuid="u-1"))
        self.assertEqual(fw.copies["agent-1"]["state"], "TASK_RUNNING")
        fw.on_update(pb.TaskStatus(task_id="t-1", agent_id="agent-1",
                                   state=pb.TASK_FAILED, uuid="u-2"))
        self.assertEqual(stub.names(), ["Acknowledge", "Acknowledge", "Revive"])
        self.assertEqual(stub.calls[1][1].uuid, "u-2")
        self.assertNotIn("agent-1", fw.copies)

    def test_updates_without_uuid_are_not_acknowledged(self):
        fw, stub = framework()
        fw.on_update(pb.TaskStatus(task_id="t-9", agent_id="agent-9", state=pb.TASK_LOST))
        self.assertEqual(stub.names(), [])

    def test_reconcile_after_a_resubscription(self):
        fw, stub = framework()
        fw.on_subscribed(pb.Subscribed(framework_id="fw-1", stream_id="stream-2"))
        self.assertEqual(stub.names(), ["Reconcile"])
        self.assertEqual(stub.calls[0][1].header.stream_id, "stream-2")


if __name__ == "__main__":
    unittest.main()
