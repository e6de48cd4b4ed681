"""The convolutions-alone bench (issue 12): its inventory, its timing worker, its table."""

from __future__ import annotations

import tensorflow as tf
from conftest import TINY_MODEL

from bench import convolutions
from bench.common import Measurement
from bench.flops import function_flops
from bench.worker_tools import synthetic_batch
from moss_tf.config import load_config
from moss_tf.train.stage import build_trainer

TINY = [f"model.{key}={value}" for key, value in TINY_MODEL.items()]
TINY += ["train.batch_size=2", "train.crop_size=16", "train.weight_average=0"]


def _tiny_step_graph(stage="pretrain"):
    trainer = build_trainer(load_config("configs/demo.yaml", TINY), stage)
    batch = synthetic_batch(tf, stage, 2, 16)
    return tf.function(trainer.train_step).get_concrete_function(batch)


def test_every_convolution_of_a_training_step_is_listed_with_the_profilers_flops():
    step = _tiny_step_graph()
    found = convolutions.graph_convolutions(step.graph)
    graph_ops = [op for op in step.graph.get_operations() if op.type in convolutions.CONV_TYPES]
    assert sum(found.values()) == len(graph_ops)
    profiler = function_flops(step)
    for op_type in convolutions.CONV_TYPES:
        listed = sum(count * c.flops for c, count in found.items() if c.op_type == op_type)
        assert listed == profiler[op_type] > 0, op_type


def test_each_listed_convolution_runs_alone_with_the_shape_the_graph_gives_it():
    step = _tiny_step_graph("semi")
    outputs = {}
    for op in step.graph.get_operations():
        if op.type in convolutions.CONV_TYPES:
            outputs.setdefault(op.type, set()).add(tuple(op.outputs[0].shape.as_list()))
    for conv in convolutions.graph_convolutions(step.graph):
        fn, make_inputs = convolutions.convolution_call(tf, conv)
        shape = tuple(fn(*make_inputs()).shape.as_list())
        assert shape in outputs[conv.op_type], (conv.op_type, shape)
        if conv.op_type == "Conv2DBackpropFilter":
            assert shape == conv.shapes[1]  # the kernel's shape


def test_worker_times_the_whole_step_its_convolutions_and_the_peak_side_by_side():
    result = convolutions.convolutions(
        "pretrain", config="configs/demo.yaml", overrides=TINY, rounds=1, min_seconds=0.0
    )
    assert result["setting"] == "pretrain step, 2 × 16²"
    assert set(result["convolutions"]) == set(convolutions.CONV_TYPES)
    conv_flops = sum(entry["flops"] for entry in result["convolutions"].values())
    assert 0 < conv_flops < result["graph_flops"]  # the rest: batch norms, memory, Adam
    assert result["whole_s"] > 0 and convolutions.alone_seconds(result) > 0
    assert result["peak_gflops"] > 1
    measurement = Measurement("convolutions/8x64/pretrain", "convolutions", {}, "t", result)
    (row,) = convolutions.rows([measurement])
    shares = convolutions.shares_of_peak(result)
    assert row[0] == "pretrain step, 2 × 16²"
    assert row[5] == f"{shares['ceiling']:.0%}"
    assert row[6].count("%") == 3  # forward / backprop input / backprop filter


def test_inference_row_times_one_image_through_the_released_network():
    result = convolutions.convolutions("inference", side=32, rounds=1, min_seconds=0.0)
    assert result["setting"] == "one 32² image"
    assert set(result["convolutions"]) == {"Conv2D"}  # no backward pass
    # Every convolution of the released network, whatever its shape: 104 of them.
    assert result["convolutions"]["Conv2D"]["ops"] == 104


def test_plan_follows_the_side_by_side_settings_and_the_table_marks_failures():
    plan = convolutions.plan(paper=True, threads=2)
    keys = [m.key for m in plan]
    assert keys == [
        "convolutions/inference/512",
        "convolutions/8x64/pretrain",
        "convolutions/8x64/semi",
        "convolutions/paper/pretrain",
        "convolutions/paper/semi",
    ]
    semi = plan[-1]
    assert "train.batch_size=4" in semi.params["overrides"]
    assert all("train.weight_average=0" in m.params.get("overrides", [0]) for m in plan[1:])
    assert all(m.params["threads"] == 2 for m in plan)
    assert semi.timeout_s > plan[1].timeout_s
    assert [m.key for m in convolutions.plan(paper=False)] == keys[:3]
    # the side-by-side's --paper-semi-batch
    smaller = convolutions.plan(paper=True, paper_semi_batch=2)[-1]
    assert "train.batch_size=2" in smaller.params["overrides"]
    plan[0].result = {"error": "exit code -9"}
    text = convolutions.report_section(plan[:1])
    assert "Ceiling" in text and "failed" in text.lower()
    assert convolutions.report_section([Measurement("scoring", "scoring", {}, "s")]) == ""
