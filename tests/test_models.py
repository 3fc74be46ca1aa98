import pytest
import torch

from twostream.models import build_model, cross_modality_conv


def test_shapes_rgb_and_flow():
    rgb = build_model("resnet18", num_classes=7, in_channels=3)
    flow = build_model("resnet18", num_classes=7, in_channels=4)
    assert rgb(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    assert flow(torch.zeros(2, 4, 64, 64)).shape == (2, 7)
    assert flow.conv1.weight.shape == (64, 4, 7, 7)


def test_head_is_two_fc_with_relu_and_dropout():
    model = build_model("resnet18", num_classes=5, hidden=32, dropout=0.5)
    kinds = [type(m).__name__ for m in model.fc]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear"]
    assert model.fc[0].in_features == 512 and model.fc[0].out_features == 32
    assert model.fc[2].p == 0.5 and model.fc[3].out_features == 5


def test_cross_modality_init_is_mean_of_rgb_repeated():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, bias=False)
    new = cross_modality_conv(conv, 6)
    expected = conv.weight.mean(dim=1)  # (8, 3, 3)
    for c in range(6):
        torch.testing.assert_close(new.weight[:, c], expected, rtol=0, atol=0)
    # a constant input gives the same response as 2L/3 times the rgb conv's on the mean
    x = torch.ones(1, 6, 5, 5)
    torch.testing.assert_close(new(x), conv(torch.ones(1, 3, 5, 5)) * 2, rtol=1e-5, atol=1e-5)


def test_local_pth_weights_are_loaded(tmp_path):
    src = build_model("resnet18", num_classes=3)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    model = build_model("resnet18", num_classes=3, in_channels=4, pretrained=str(tmp_path / "w.pth"))
    torch.testing.assert_close(model.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    torch.testing.assert_close(model.conv1.weight[:, 0], src.conv1.weight.mean(dim=1))


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="resnet18, resnet50; got 'vgg'"):
        build_model("vgg", num_classes=3)
    with pytest.raises(FileNotFoundError, match="none, imagenet or a path"):
        build_model("resnet18", num_classes=3, pretrained="missing.pth")
