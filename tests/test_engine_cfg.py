"""The cfg parser builds the stock YOLOv3 cfgs and fails loudly, naming file and line."""

from __future__ import annotations

import pytest
import torch

from engine.cfg import CfgError, RouteSpec, layer_shapes, parse_cfg, parse_cfg_text
from engine.model import Darknet

NET = "[net]\nwidth=64\nheight=64\nchannels=3\n"
HEAD = ("[convolutional]\nfilters=18\nsize=1\nstride=1\nactivation=linear\n"
        "[yolo]\nmask=0,1,2\nanchors=10,14,23,27,37,58\nclasses=1\nnum=3\n")


def head_sizes(spec) -> list[tuple[int, int]]:
    shapes = layer_shapes(spec)
    return [shapes[i - 1][1:] for i, layer in enumerate(spec.layers)
            if type(layer).__name__ == "YoloSpec"]


@pytest.mark.parametrize(("name", "heads"), [
    ("yolov3-tiny.cfg", [(13, 13), (26, 26)]),
    ("yolov3.cfg", [(13, 13), (26, 26), (52, 52)]),
    ("yolov3-spp.cfg", [(19, 19), (38, 38), (76, 76)]),  # 608 x 608 in the file
])
def test_it_builds_the_stock_cfgs(darknet_dir, name, heads):
    spec = parse_cfg(darknet_dir / name)
    assert spec.classes == 80
    assert head_sizes(spec) == heads


def test_the_built_network_outputs_one_tensor_per_head(darknet_dir):
    spec = parse_cfg(darknet_dir / "yolov3.cfg", input_size=320)
    network = Darknet(spec).eval()
    with torch.inference_mode():
        outputs = network(torch.zeros(2, 3, 320, 320))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 10, 10, 85), (2, 3, 20, 20, 85),
                                                 (2, 3, 40, 40, 85)]


def test_input_size_overrides_the_cfg(darknet_dir):
    spec = parse_cfg(darknet_dir / "yolov3-tiny.cfg", input_size=(640, 320))
    assert (spec.width, spec.height) == (640, 320)
    assert head_sizes(spec) == [(10, 20), (20, 40)]


@pytest.mark.parametrize("size", [300, 0, -32, (416, 100)])
def test_input_size_must_be_a_multiple_of_32(darknet_dir, size):
    with pytest.raises(CfgError, match="multiple of 32"):
        parse_cfg(darknet_dir / "yolov3-tiny.cfg", input_size=size)


def test_an_unknown_section_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "\n[dropout]\nprobability=.5\n" + HEAD)
    with pytest.raises(CfgError, match=rf"{path}:6: unknown section \[dropout\]"):
        parse_cfg(path)


def test_an_unknown_key_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "[convolutional]\nfilters=8\nsize=3\ndilation=2\n" + HEAD)
    with pytest.raises(CfgError, match=rf"{path}:8: unknown key 'dilation' in \[convolutional\]"):
        parse_cfg(path)


def test_an_unsupported_activation_is_an_error(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "[convolutional]\nfilters=8\nactivation=swish\n" + HEAD)
    with pytest.raises(CfgError, match=rf"{path}:7: unsupported activation 'swish'"):
        parse_cfg(path)


def test_a_bad_value_is_an_error_naming_its_line(tmp_path):
    path = tmp_path / "bad.cfg"
    path.write_text(NET + "[convolutional]\nfilters=eight\n" + HEAD)
    with pytest.raises(CfgError, match=rf"{path}:6: bad value for 'filters'"):
        parse_cfg(path)


def test_route_takes_negative_and_absolute_indices():
    text = (NET + "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n"  # 0
            "[convolutional]\nfilters=6\nsize=3\npad=1\nactivation=leaky\n"  # 1
            "[route]\nlayers=-1,0\n"  # 2: 6 + 4 channels
            + HEAD)
    spec = parse_cfg_text(text)
    route = spec.layers[2]
    assert isinstance(route, RouteSpec) and route.sources == (1, 0)
    assert layer_shapes(spec)[2] == (10, 64, 64)


def test_a_route_to_a_later_layer_is_an_error():
    text = NET + "[route]\nlayers=3\n" + HEAD
    with pytest.raises(CfgError, match=r"<cfg>:6: 'layers' refers to layer 3"):
        parse_cfg_text(text)


def test_a_shortcut_between_different_shapes_is_an_error():
    text = (NET + "[convolutional]\nfilters=4\nsize=1\nactivation=leaky\n"
            "[convolutional]\nfilters=8\nsize=1\nactivation=leaky\n"
            "[shortcut]\nfrom=-2\nactivation=linear\n" + HEAD)
    with pytest.raises(CfgError, match=r"<cfg>:13: shortcut adds"):
        parse_cfg_text(text)


def test_a_yolo_layer_must_get_the_channels_its_anchors_need():
    text = NET + HEAD.replace("filters=18", "filters=17")
    with pytest.raises(CfgError, match=r"\[yolo\] with 3 anchors and 1 classes needs 18"):
        parse_cfg_text(text)
