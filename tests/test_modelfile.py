"""`novagen calibrate` and `novagen finetune` on what a user has: a trained model saved with
torch.export (dynamic batch) and an .npz of inputs and labels."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import novagen  # noqa: E402
from novagen.cli import run  # noqa: E402
from novagen.errors import InputError  # noqa: E402
from novagen.networks import digits_cnn, digits_data  # noqa: E402
from novagen.torch.modelfile import load_model  # noqa: E402


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A digits CNN trained here (4 epochs), exported with a dynamic batch, and its test split as .npz."""
    d = digits_data()
    model = digits_cnn(d, epochs=4)
    folder = tmp_path_factory.mktemp("user")
    batch = torch.export.Dim("batch")
    ep = torch.export.export(model, (d.x_test[:2],), dynamic_shapes={"input": {0: batch}})
    torch.export.save(ep, str(folder / "digits.pt2"))
    np.savez(folder / "test.npz", x=d.x_test.numpy(), y=d.y_test.numpy())
    np.savez(folder / "train.npz", x=d.x_train[:256].numpy(), y=d.y_train[:256].numpy())
    torch.save(model.state_dict(), folder / "weights.pt")
    with torch.no_grad():
        ref = model(d.x_test)
    return folder, ref, d


def test_exported_convolutions_become_modules_and_compute_the_same(user_files):
    folder, ref, d = user_files
    model = load_model(folder / "digits.pt2")
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert sorted(convs) == ["0", "2", "5", "8"]
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in convs.values())
    with torch.no_grad():
        assert torch.allclose(model(d.x_test), ref, atol=1e-5)
    q = novagen.torch.replace_conv2d(model, "F(4,3)/best", "fp32")
    with torch.no_grad():
        assert torch.allclose(q(d.x_test), ref, atol=1e-4)


def test_calibrate_command(user_files, tmp_path, capsys):
    folder, ref, d = user_files
    out = tmp_path / "q.json"
    code = run(["calibrate", str(folder / "digits.pt2"), "-a", "F(6,3)/best", "-P", "int8-tap",
                "--data", str(folder / "test.npz"), "--samples", "128", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert sorted(doc["scales"]) == ["0", "2", "5", "8"] and doc["samples"] == 128
    v = np.array(doc["scales"]["2"]["V"])
    assert v.shape == (8, 8) and (v > 0).all()
    fp32 = 100.0 * float((ref.argmax(1) == d.y_test).float().mean())
    top1 = doc["top1"]
    assert top1["fp32"] == pytest.approx(fp32)
    assert top1["calibrated"] >= top1["fp32"] - 5.0  # calibrated tap-wise int8 F(6,3) stays usable
    code = run(["calibrate", str(folder / "digits.pt2"), "-a", "F(6,3)/best", "--data", str(folder / "test.npz"),
                "-o", str(out)])
    assert code == 2 and "--force" in capsys.readouterr().err
    assert json.loads(out.read_text()) == doc  # untouched


@pytest.mark.parametrize("args,fragment", [
    (["calibrate", "{f}/weights.pt", "-a", "F(4,3)/best", "--data", "{f}/test.npz", "-o", "{t}/q.json"],
     "state dict has no architecture"),
    (["calibrate", "{f}/missing.pt2", "-a", "F(4,3)/best", "--data", "{f}/test.npz", "-o", "{t}/q.json"],
     "does not exist"),
    (["calibrate", "{f}/digits.pt2", "-a", "F(4,3)/best", "--data", "{t}/noinputs.npz", "-o", "{t}/q.json"],
     "no array 'x'"),
    (["finetune", "{f}/digits.pt2", "-a", "F(4,3)/best", "--data", "{t}/nolabels.npz", "-o", "{t}/out"],
     "no labels"),
    (["finetune", "{f}/digits.pt2", "-a", "F(4,3)/best", "--data", "{f}/train.npz", "--learn", "matrices",
      "-o", "{t}/out"], "--learn"),
    (["calibrate", "{f}/digits.pt2", "-a", "F(4,3)/best", "--data", "{f}/test.npz", "--method", "mean",
      "-o", "{t}/q.json"], "--method"),
])
def test_bad_inputs_are_one_line_and_write_nothing(user_files, tmp_path, capsys, args, fragment):
    folder = user_files[0]
    np.savez(tmp_path / "noinputs.npz", images=np.zeros((2, 1, 8, 8), np.float32))
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((2, 1, 24, 24), np.float32))
    before = sorted(p.name for p in tmp_path.iterdir())
    code = run([a.format(f=folder, t=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_load_model_refuses_other_files(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(InputError, match=".pt2"):
        load_model(tmp_path / "m.onnx")
    (tmp_path / "broken.pt2").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="could not be loaded"):
        load_model(tmp_path / "broken.pt2")


@pytest.mark.slow
def test_finetune_command_writes_weights_and_verified_algorithms(user_files, tmp_path, capsys):
    folder, _, d = user_files
    out = tmp_path / "tuned"
    code = run(["finetune", str(folder / "digits.pt2"), "-a", "F(4,3)/best", "-P", "int8-tap",
                "--data", str(folder / "train.npz"), "--epochs", "1", "--calibrate", "64", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "report.json").read_text())
    assert len(doc["losses"]) == 1 and doc["layers"] == {n: "F(4,3)/best" for n in ("0", "2", "5", "8")}
    (row,) = doc["learned"]
    entry = out / "algorithms" / "novagen_f4_3_best_int8_tap_learned.json"
    alg = novagen.algebra.from_dict(json.loads(entry.read_text()))
    assert [str(p) for p in alg.finite_points] == row["points"]
    assert novagen.verify(alg).verified  # exact, proved like a catalog entry
    state = torch.load(out / "state_dict.pt")
    assert {"0.weight", "8.weight"} <= set(state) and state["0.weight"].shape == (16, 1, 3, 3)
    assert doc["top1_on_data"]["finetuned"] >= doc["top1_on_data"]["fp32"] - 5.0
