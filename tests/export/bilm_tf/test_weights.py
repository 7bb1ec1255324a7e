"""The ELMo hdf5 weight layout: exact round trips and clear errors for bad files."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from elmo_runtime.errors import OptionsError
from elmo_runtime.format.options import load_options, parse_options
from support.bilm_fixtures import require_fixtures

pytestmark = pytest.mark.usefixtures("one_torch_thread")

h5py = pytest.importorskip("h5py")
weights_mod = pytest.importorskip("elmo_export.bilm_tf.weights")
WeightsError = weights_mod.WeightsError
read_weights = weights_mod.read_weights
write_weights = weights_mod.write_weights

W_P_BWD1 = "RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0"


@pytest.fixture(scope="module")
def fixture_files():
    d = require_fixtures()
    return d / "options.json", d / "lm_weights.hdf5"


@pytest.fixture(scope="module")
def options(fixture_files):
    return load_options(fixture_files[0])


@pytest.fixture()
def weights_copy(fixture_files, tmp_path):
    """A writable copy of the fixture weights."""
    path = tmp_path / "weights.hdf5"
    shutil.copyfile(fixture_files[1], path)
    return path


def _options_dict(fixture_files) -> dict:
    return json.loads(fixture_files[0].read_text(encoding="utf-8"))


def _datasets(path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[...]

        f.visititems(visit)
    return out


# ---------------------------------------------------------------------- round trip
def test_round_trip_through_the_model_is_bit_exact(fixture_files, options, tmp_path):
    pytest.importorskip("torch", reason="the PyTorch model needs the export extra")
    from elmo_export.pytorch.modules import BiLM

    original = read_weights(fixture_files[1], options)
    assert set(original) == set(weights_mod.weight_shapes(options))
    model = BiLM.from_elmo_weights(options, original)
    exported = model.elmo_weights()
    assert set(exported) == set(original)
    for name, arr in original.items():
        assert exported[name].dtype == np.float32, name
        assert exported[name].shape == arr.shape, name
        assert exported[name].tobytes() == arr.tobytes(), name

    out = tmp_path / "round_trip.hdf5"
    write_weights(out, exported, options)
    again = read_weights(out, options)
    for name, arr in original.items():
        np.testing.assert_array_equal(again[name], arr, err_msg=name)

    # The written file holds exactly the fixture file's datasets, byte for byte.
    src, dst = _datasets(fixture_files[1]), _datasets(out)
    assert sorted(dst) == sorted(src)
    for name, arr in src.items():
        assert dst[name].dtype == arr.dtype, name
        assert dst[name].shape == arr.shape, name
        assert dst[name].tobytes() == arr.tobytes(), name


def test_round_trip_of_random_weights(tmp_path):
    from support.bilm_random import random_weights
    from support.models import small_options

    opts = small_options()
    w = random_weights(opts, seed=11, scale=3.0)
    path = tmp_path / "random.hdf5"
    write_weights(path, w, opts)
    back = read_weights(path, opts)
    assert set(back) == set(w)
    for name in w:
        assert back[name].tobytes() == w[name].tobytes(), name


def test_model_weights_are_really_used(fixture_files, options):
    """Guards the round trip above against a model that ignores what it is given."""
    pytest.importorskip("torch", reason="the PyTorch model needs the export extra")
    from elmo_export.pytorch.modules import BiLM

    w = read_weights(fixture_files[1], options)
    changed = dict(w)
    changed[W_P_BWD1] = w[W_P_BWD1] + 1.0
    got = BiLM.from_elmo_weights(options, changed).elmo_weights()[W_P_BWD1]
    assert not np.array_equal(got, w[W_P_BWD1])
    np.testing.assert_array_equal(got, changed[W_P_BWD1])


# ----------------------------------------------------------------- n_characters
@pytest.mark.parametrize("n_characters", [261, 262])
def test_both_n_characters_accepted(fixture_files, n_characters):
    data = _options_dict(fixture_files)
    data["char_cnn"]["n_characters"] = n_characters
    opts = parse_options(data)
    assert opts.n_characters == n_characters
    w = read_weights(fixture_files[1], opts)
    assert w["char_embed"].shape == (261, opts.char_embed_dim)


def test_n_characters_261_and_262_give_the_same_model(fixture_files):
    torch = pytest.importorskip("torch", reason="the PyTorch model needs the export extra")
    from elmo_export.pytorch.modules import BiLM
    from elmo_runtime.format.chars import pack

    outs = []
    for n in (261, 262):
        data = _options_dict(fixture_files)
        data["char_cnn"]["n_characters"] = n
        opts = parse_options(data)
        model = BiLM.from_elmo_weights(opts, read_weights(fixture_files[1], opts))
        model.eval()
        feed = pack([["Hello", "wörld"], []], opts.max_characters_per_token).feed()
        with torch.no_grad():
            outs.append(model.run_feed(feed)["layers"].numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0]).max() > 0


@pytest.mark.parametrize("n_characters", [260, 263])
def test_other_n_characters_rejected(fixture_files, n_characters):
    data = _options_dict(fixture_files)
    data["char_cnn"]["n_characters"] = n_characters
    with pytest.raises(OptionsError, match="n_characters"):
        parse_options(data)


# --------------------------------------------------------------------- bad files
def test_options_not_matching_the_file(fixture_files):
    data = _options_dict(fixture_files)
    data["lstm"]["projection_dim"] = 8  # the file has 16
    opts = parse_options(data)
    with pytest.raises(WeightsError) as err:
        read_weights(fixture_files[1], opts)
    msg = str(err.value)
    # Names the first mismatching dataset and both shapes.
    assert "CNN_proj/W_proj" in msg
    assert "(124, 16)" in msg and "(124, 8)" in msg
    assert str(fixture_files[1]) in msg


def test_dataset_with_the_wrong_shape(weights_copy, options):
    with h5py.File(weights_copy, "r+") as f:
        del f[W_P_BWD1]
        f.create_dataset(W_P_BWD1, data=np.zeros((64, 15), np.float32))
    with pytest.raises(WeightsError) as err:
        read_weights(weights_copy, options)
    msg = str(err.value)
    assert W_P_BWD1 in msg
    assert "(64, 15)" in msg and "(64, 16)" in msg


def test_missing_dataset(weights_copy, options):
    name = "CNN_high_1/b_transform"
    with h5py.File(weights_copy, "r+") as f:
        del f[name]
    with pytest.raises(WeightsError, match=re.escape(name)) as err:
        read_weights(weights_copy, options)
    assert "missing" in str(err.value)


def test_group_where_a_dataset_belongs(weights_copy, options):
    name = "CNN/b_cnn_2"
    with h5py.File(weights_copy, "r+") as f:
        del f[name]
        f.create_group(name)
    with pytest.raises(WeightsError, match=re.escape(name)):
        read_weights(weights_copy, options)


def test_not_an_hdf5_file(tmp_path, options):
    path = tmp_path / "weights.hdf5"
    path.write_text('{"this is": "json, not hdf5"}\n', encoding="utf-8")
    with pytest.raises(WeightsError, match="HDF5"):
        read_weights(path, options)


def test_no_such_file(tmp_path, options):
    with pytest.raises(WeightsError, match="no such"):
        read_weights(tmp_path / "absent.hdf5", options)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_in_the_file(weights_copy, options, bad):
    name = "RNN_0/RNN/MultiRNNCell/Cell0/LSTMCell/B"
    with h5py.File(weights_copy, "r+") as f:
        data = f[name][...]
        data[17] = bad
        f[name][...] = data
    with pytest.raises(WeightsError, match=re.escape(name)) as err:
        read_weights(weights_copy, options)
    assert "NaN" in str(err.value) or "infinite" in str(err.value)


def test_float64_file_is_read_as_float32(weights_copy, options, fixture_files):
    name = "CNN_proj/b_proj"
    with h5py.File(weights_copy, "r+") as f:
        data = f[name][...].astype(np.float64)
        del f[name]
        f.create_dataset(name, data=data)
    w = read_weights(weights_copy, options)
    assert w[name].dtype == np.float32
    np.testing.assert_array_equal(w[name], read_weights(fixture_files[1], options)[name])


def test_write_refuses_nan_and_leaves_no_file(tmp_path, options, fixture_files):
    w = read_weights(fixture_files[1], options)
    w["char_embed"] = w["char_embed"].copy()
    w["char_embed"][3, 1] = np.nan
    out = tmp_path / "out.hdf5"
    with pytest.raises(WeightsError, match="char_embed"):
        write_weights(out, w, options)
    assert list(tmp_path.iterdir()) == []


# Datasets whose data lives in other files: a stranger's weights.hdf5 must not make
# convert read /etc/passwd or another hdf5 file into the model (breaker finding 1).
B_PROJ = "CNN_proj/b_proj"


def _secret(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/u")
    return secret


def test_external_raw_storage_refused(weights_copy, options, tmp_path):
    secret = _secret(tmp_path)
    with h5py.File(weights_copy, "r+") as f:
        shape = f[B_PROJ].shape
        del f[B_PROJ]
        f.create_dataset(B_PROJ, shape=shape, dtype="f4", external=[(str(secret), 0, 4 * shape[0])])
    with pytest.raises(WeightsError, match="external raw files") as err:
        read_weights(weights_copy, options)
    assert B_PROJ in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("target_is_hdf5", [True, False])
def test_external_link_refused(weights_copy, options, tmp_path, target_is_hdf5):
    other = tmp_path / "other.h5"
    if target_is_hdf5:
        with h5py.File(weights_copy, "r") as src, h5py.File(other, "w") as dst:
            dst.create_dataset("b", data=src[B_PROJ][...])
    else:
        other = _secret(tmp_path)
    with h5py.File(weights_copy, "r+") as f:
        del f[B_PROJ]
        f[B_PROJ] = h5py.ExternalLink(str(other), "/b")
    with pytest.raises(WeightsError, match="external link") as err:
        read_weights(weights_copy, options)
    assert B_PROJ in str(err.value)


def test_external_link_on_a_group_refused(weights_copy, options, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(weights_copy, "r") as src, h5py.File(other, "w") as dst:
        src.copy("CNN_proj", dst, name="CNN_proj")
    with h5py.File(weights_copy, "r+") as f:
        del f["CNN_proj"]
        f["CNN_proj"] = h5py.ExternalLink(str(other), "/CNN_proj")
    with pytest.raises(WeightsError, match="'CNN_proj' is an external link"):
        read_weights(weights_copy, options)


def test_soft_link_refused(weights_copy, options):
    with h5py.File(weights_copy, "r+") as f:
        f["spare"] = f[B_PROJ][...]
        del f[B_PROJ]
        f[B_PROJ] = h5py.SoftLink("/spare")
    with pytest.raises(WeightsError, match="soft link"):
        read_weights(weights_copy, options)


def test_virtual_dataset_refused(weights_copy, options, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(weights_copy, "r") as src, h5py.File(other, "w") as dst:
        dst.create_dataset("b", data=src[B_PROJ][...])
        shape = src[B_PROJ].shape
    layout = h5py.VirtualLayout(shape=shape, dtype="f4")
    layout[:] = h5py.VirtualSource(str(other), "b", shape=shape)
    with h5py.File(weights_copy, "r+") as f:
        del f[B_PROJ]
        f.create_virtual_dataset(B_PROJ, layout)
    with pytest.raises(WeightsError, match="virtual dataset"):
        read_weights(weights_copy, options)


# ------------------------------------------- declared sizes (issue 24 item 11)
def _declare(path, name, shape):
    """Replace dataset ``name`` with one declaring ``shape`` of fill values, compressed."""
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, shape=shape, dtype="f4", chunks=(64, 64), compression="gzip",
                         fillvalue=0.5)


@pytest.mark.parametrize("shape", [(65536, 4096), (1 << 24, 4096)])  # 1 GiB and 256 GiB
def test_a_declared_shape_is_checked_before_the_data_is_read(weights_copy, options, shape):
    """A small weights.hdf5 declaring a (65536, 4096) char_embed took 1.1 GiB before the
    shape error; 256 GiB ended in an internal MemoryError. Now: refused unread."""
    import subprocess
    import sys

    _declare(weights_copy, "char_embed", shape)
    assert weights_copy.stat().st_size < 1 << 20
    code = ("import resource, sys\n"
            "from elmo_runtime.format.options import load_options\n"
            "from elmo_export.bilm_tf.weights import read_weights, WeightsError\n"
            "options = load_options(sys.argv[1])\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n"
            "    read_weights(sys.argv[2], options)\n"
            "except WeightsError as e:\n"
            "    print(e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    options_json = require_fixtures() / "options.json"
    done = subprocess.run([sys.executable, "-c", code, str(options_json), str(weights_copy)],
                          capture_output=True, text=True, check=True, timeout=120)
    message, grown_kib = done.stdout.splitlines()
    assert message == (f"{weights_copy}: dataset 'char_embed' has shape {shape}, the options "
                       "expect (261, 4); nothing was read")
    assert int(grown_kib) < 64 * 1024  # the peak grew by < 64 MiB, not the declared GiBs


def test_a_declared_size_beyond_the_file_is_refused_unread(tmp_path):
    """Options may declare big tensors too: one that would take far more memory than the
    file holds (unwritten chunks) is refused before it is read."""
    path = tmp_path / "w.hdf5"
    path.write_bytes(b"x" * 1000)
    with pytest.raises(WeightsError, match="declares 1,024 MiB in a file of 0.0 MiB"):
        weights_mod._check_declared(path, "W", (65536, 4096), (65536, 4096), 1000)
    weights_mod._check_declared(path, "W", (1024, 16), (1024, 16), 1000)  # 64 KiB: fine
