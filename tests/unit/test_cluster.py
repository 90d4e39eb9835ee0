"""Reading partitions and limits from sinfo output."""

import asyncio
import time

import pytest
from hpchub_config import cluster
from hpchub_config.cluster import (
    ClusterQueryError,
    enrich,
    expand_hostlist,
    parse_associations,
    parse_gpu_count,
    parse_nodes,
    parse_oneliner,
    parse_partition_limits,
    parse_reservations,
    parse_sinfo,
    parse_slurm_time,
)

SINFO = """\
node1|batch*|4|8000|(null)|8:00:00|up|idle
node2|batch*|4|8000|(null)|8:00:00|up|mix
node3|batch*|16|64000|(null)|8:00:00|up|down*
gpu1|gpu|32|256000|gpu:a100:4(S:0-1)|1-00:00:00|up|idle
gpu2|gpu|32|256000|gpu:a100:2,shard:8|1-00:00:00|up|drain
old1|legacy|2|2000|(null)|UNLIMITED|down|idle
"""


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("8:00:00", 480),
        ("1-00:00:00", 1440),
        ("30", 30),
        ("45:30", 46),
        ("UNLIMITED", None),
        ("infinite", None),
        ("2-12:30:00", 3630),
    ],
)
def test_slurm_time_limits(text, minutes):
    assert parse_slurm_time(text) == minutes


@pytest.mark.parametrize(
    "gres, count",
    [
        ("(null)", 0),
        ("gpu:4", 4),
        ("gpu:a100:4(S:0-1)", 4),
        ("gpu:a100:2,gpu:v100:1", 3),
        ("shard:8", 0),
    ],
)
def test_gpu_counts(gres, count):
    assert parse_gpu_count(gres) == count


def test_partitions_use_only_usable_nodes():
    partitions = parse_sinfo(SINFO)
    batch = partitions["batch"]
    assert batch.default and batch.up
    # node3 is down: its 16 cores are not offered
    assert (batch.max_cores, batch.max_memory_mb, batch.usable_nodes) == (4, 8000, 2)
    assert batch.max_walltime_minutes == 480
    gpu = partitions["gpu"]
    assert (gpu.max_gpus, gpu.usable_nodes, gpu.default) == (4, 1, False)
    assert partitions["legacy"].up is False
    assert partitions["legacy"].max_walltime_minutes is None


def test_garbage_sinfo_output_is_an_error():
    with pytest.raises(ClusterQueryError):
        parse_sinfo("sinfo: error: something\n")


# --- scontrol: nodes, partitions, reservations; the snapshot --------------------------------

SCONTROL_NODES = """\
NodeName=node1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=3 CPUEfctv=8 CPUTot=8 CPULoad=0.10 AvailableFeatures=avx512 ActiveFeatures=avx512 Gres=(null) NodeAddr=node1 NodeHostName=node1 Version=22.05.8 OS=Linux 6.1.0-27-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01) RealMemory=16000 AllocMem=6144 FreeMem=9000 Sockets=8 Boards=1 State=MIXED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=batch BootTime=2026-11-28T06:00:00 SlurmdStartTime=2026-11-28T06:01:00 LastBusyTime=2026-11-28T06:02:00 CfgTRES=cpu=8,mem=16000M,billing=8 AllocTRES=cpu=3,mem=6G CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s
NodeName=node2 Arch=x86_64 CoresPerSocket=1 CPUAlloc=1 CPUEfctv=8 CPUTot=8 CPULoad=0.00 AvailableFeatures=avx2,gpu ActiveFeatures=avx2,gpu Gres=gpu:a100:2 NodeAddr=node2 NodeHostName=node2 Version=22.05.8 OS=Linux 6.1.0 #1 SMP RealMemory=16000 AllocMem=1024 FreeMem=9000 Sockets=8 Boards=1 State=MIXED ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=batch,gpu BootTime=None CfgTRES=cpu=8,mem=16000M,billing=8,gres/gpu=2 AllocTRES=cpu=1,mem=1G,gres/gpu=1 CapWatts=n/a CurrentWatts=0 AveWatts=0
"""  # noqa: E501 (scontrol -o lines, verbatim)
SINFO_TESTBED = """\
node1|batch*|8|16000|(null)|8:00:00|up|mix
node2|batch*|8|16000|gpu:a100:2|8:00:00|up|mix
node2|gpu|8|16000|gpu:a100:2|2:00:00|up|mix
"""
SCONTROL_PARTITIONS = """\
PartitionName=batch AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=08:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=node[1-2] PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=16 TotalNodes=2 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED
PartitionName=gpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A DefaultTime=NONE MaxTime=02:00:00 MaxCPUsPerNode=4 Nodes=node2 State=UP TotalCPUs=8 TotalNodes=1 DefMemPerNode=UNLIMITED MaxMemPerNode=8000
"""  # noqa: E501 (scontrol -o lines, verbatim)
SCONTROL_RESERVATIONS = """\
ReservationName=alice-only StartTime=2026-11-28T07:00:00 EndTime=2026-11-28T07:30:00 Duration=00:30:00 Nodes=node1 NodeCnt=1 CoreCnt=8 Features=(null) PartitionName=(null) Flags=SPEC_NODES TRES=cpu=8 Users=alice Groups=(null) Accounts=(null) Licenses=(null) State=ACTIVE BurstBuffer=(null) Watts=n/a MaxStartDelay=(null)
ReservationName=physics StartTime=2026-11-28T07:00:00 EndTime=2026-11-28T07:30:00 Duration=00:30:00 Nodes=node[1-2] NodeCnt=2 CoreCnt=16 Features=(null) PartitionName=(null) Flags=SPEC_NODES TRES=cpu=16 Users=(null) Groups=(null) Accounts=physics Licenses=(null) State=ACTIVE BurstBuffer=(null) Watts=n/a MaxStartDelay=(null)
ReservationName=later StartTime=2027-01-01T00:00:00 EndTime=2027-01-01T01:00:00 Duration=01:00:00 Nodes=node1 NodeCnt=1 CoreCnt=8 Features=(null) PartitionName=(null) Flags=SPEC_NODES TRES=cpu=8 Users=alice Groups=(null) Accounts=(null) Licenses=(null) State=INACTIVE BurstBuffer=(null) Watts=n/a MaxStartDelay=(null)
"""  # noqa: E501 (scontrol -o lines, verbatim)


def test_node_lines_keep_values_with_spaces_apart():
    values = parse_oneliner("NodeName=n1 OS=Linux 6.1 #1 SMP RealMemory=100 Reason=Not responding")
    assert values == {
        "NodeName": "n1",
        "OS": "Linux 6.1 #1 SMP",
        "RealMemory": "100",
        "Reason": "Not responding",
    }


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("gpu[01-02,05],login1", ["gpu01", "gpu02", "gpu05", "login1"]),
        ("(null)", []),
    ],
)
def test_host_lists_expand(text, names):
    assert expand_hostlist(text) == names


def test_partitions_know_free_resources_gpu_types_features_and_limits():
    partitions = enrich(
        parse_sinfo(SINFO_TESTBED),
        parse_nodes(SCONTROL_NODES),
        parse_partition_limits(SCONTROL_PARTITIONS),
    )
    batch, gpu = partitions["batch"], partitions["gpu"]
    assert (batch.free_cores, batch.free_memory_mb) == (5 + 7, 9856 + 14976)
    assert dict(batch.gpu_types) == {"a100": 2} and dict(batch.free_gpus) == {"a100": 1}
    assert batch.features == ("avx2", "avx512", "gpu")
    assert set(batch.node_features) == {("avx512",), ("avx2", "gpu")}
    # MaxCPUsPerNode / MaxMemPerNode of the gpu partition cap what its nodes have.
    assert (gpu.max_cores, gpu.max_memory_mb, gpu.max_walltime_minutes) == (4, 8000, 120)
    assert gpu.features == ("avx2", "gpu") and dict(gpu.free_gpus) == {"a100": 1}


def test_reservations_say_who_may_use_them():
    reservations = parse_reservations(SCONTROL_RESERVATIONS)
    assert reservations["physics"].nodes == ("node1", "node2")
    assert reservations["alice-only"].usable_by("alice", ["hpcusers"])
    assert not reservations["alice-only"].usable_by("bob", ["hpcusers", "physics"])
    assert reservations["physics"].usable_by("bob", ["hpcusers", "physics"])
    assert reservations["physics"].accounts_for("bob", ["hpcusers", "physics"]) == ("physics",)
    assert not reservations["later"].active
    assert parse_reservations("No reservations in the system\n") == {}


def test_associations_of_a_user():
    output = "hpcusers|hpcusers||normal|normal\nhpcusers|physics||interactive,normal|normal\n"
    associations = parse_associations(output)
    assert associations.default_account == "hpcusers"
    assert associations.accounts == ["hpcusers", "physics"]
    assert associations.qos["physics"] == ("interactive", "normal")
    with pytest.raises(ClusterQueryError):
        parse_associations("garbage\n")


def test_the_cache_serves_a_stale_snapshot_while_one_refresh_runs(monkeypatch):
    calls = []

    async def fake_run(argv, timeout=15.0):
        calls.append(argv[1] if argv[0].endswith("scontrol") else "sinfo")
        await asyncio.sleep(0.05)
        return {
            "sinfo": SINFO_TESTBED,
            "show": {"node": SCONTROL_NODES, "partition": SCONTROL_PARTITIONS}.get(
                argv[2], SCONTROL_RESERVATIONS
            ),
        }["sinfo" if "sinfo" in argv[0] else "show"]

    monkeypatch.setattr(cluster, "run", fake_run)

    async def scenario():
        info = cluster.ClusterInfo("/usr/bin", ttl=0.2)
        first = await info.snapshot()  # nothing cached: waits for the first read
        assert len(calls) == 4 and "gpu" in first.partitions
        await asyncio.sleep(0.3)  # stale now
        started = time.monotonic()
        stale = await asyncio.gather(*(info.snapshot() for _ in range(20)))
        assert time.monotonic() - started < 0.04  # served at once, not after the queries
        assert all(s is first for s in stale)
        await asyncio.sleep(0.1)  # the one background refresh has finished
        assert len(calls) == 8
        fresh = await info.snapshot()
        assert fresh is not first
        await asyncio.sleep(0.3)
        # A spawn's validation wants data no older than max_age: it waits for the refresh.
        assert (await info.snapshot(max_age=0.1)).fetched_at > fresh.fetched_at

    asyncio.run(scenario())
