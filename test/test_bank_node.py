"""The classifier node with a public-family checkpoint and a prompt bank: no text tower at all."""

from __future__ import annotations

import pytest

pytest.importorskip("vision_msgs.msg")
from vision_msgs.msg import Detection3DArray

from blendclip_ros.ros.conversions import array_to_pointcloud2, arrays_to_detections

from blendclip_ros.cli.prompts import main as prompts_main
from test.ros_harness import spin_until, start_classifier, stop
from test.test_classifier_node import Feed
from test.test_prompt_banks import b32  # noqa: F401 - module fixture: OpenShape B/32 file + text weights

NAME = "blendclip_bank_node"


def test_node_classifies_from_a_bank_and_refuses_another_text_space(ros_env, client, b32, nuscenes_frame,  # noqa: F811
                                                                    tmp_path):
    bank, other = tmp_path / "bank.safetensors", tmp_path / "other.safetensors"
    assert prompts_main(["encode", "--tower", "openshape_ppat:vitb32", "--weights",
                         str(b32 / "clip_b32_text.safetensors"), "--prompts", "truckscenes", "--out", str(bank)]) == 0
    assert prompts_main(["encode", "--tower", "open_clip:ViT-B-32", "--out", str(other)]) == 0
    process = start_classifier(ros_env, "-p", f"model.checkpoint:={b32 / 'b32.pt'}", "-p", f"prompts.bank:={bank}",
                               "-p", "classify.max_points:=512", "-p", "classify.min_points:=3",
                               "-p", "model.colour:=intensity", name=NAME)
    try:
        feed = Feed(client, nuscenes_frame)
        outputs: list = []
        client.create_subscription(Detection3DArray, f"/{NAME}/detections", outputs.append, 10)
        ready = spin_until(client, lambda: feed.det_pub.get_subscription_count() > 0, 90, process)
        assert ready, stop(process)
        for _ in range(40):
            feed.publish(0)
            if spin_until(client, lambda: bool(outputs), 3, process):
                break
        assert outputs, stop(process)
        assert len(outputs[0].detections) == 69
        labels = {r.hypothesis.class_id for d in outputs[0].detections for r in d.results}
        truckscenes = {"animal", "pedestrian", "barrier", "traffic cone", "traffic sign", "bicycle", "bus", "car",
                       "other vehicle", "motorcycle", "trailer", "truck"}
        assert labels - {"unknown"} and labels <= truckscenes | {"unknown"}
        # rgb from intensity: a cloud without that field is dropped with a message, its boxes 'unknown'
        header = feed.header(1)
        feed.cloud_pub.publish(array_to_pointcloud2(nuscenes_frame.points[:, :3], header, ("x", "y", "z")))
        feed.det_pub.publish(arrays_to_detections(header, feed.boxes.centers, feed.boxes.sizes,
                                                  feed.boxes.quaternions, feed.ids))
        assert spin_until(client, lambda: len(outputs) > 1 and outputs[-1].header.stamp.sec == 1001, 30, process)
        assert {r.hypothesis.class_id for d in outputs[-1].detections for r in d.results} == {"unknown"}
    finally:
        output = stop(process)
    assert "Traceback" not in output
    assert "rgb from intensity" in output and "malformed cloud" in output and "intensity" in output, output
    bad = start_classifier(ros_env, "-p", f"model.checkpoint:={b32 / 'b32.pt'}", "-p", f"prompts.bank:={other}",
                           name="blendclip_bank_bad")
    try:
        output = bad.communicate(timeout=120)[0]
    finally:
        if bad.poll() is None:
            stop(bad)
    assert bad.returncode == 1, output
    ours = [line for line in output.splitlines() if "configure failed" in line]
    assert len(ours) == 1 and "aligned to open_clip:ViT-B-32:openai" in ours[0], output
