"""Reading partitions and limits from sinfo output."""

import pytest
from hpchub_config.cluster import (
    ClusterQueryError,
    parse_gpu_count,
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
