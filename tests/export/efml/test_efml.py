"""Reading ELMoForManyLangs model directories: the config search, the .dic quirks, and
every kind of bad input refused with a message that names the file and the problem."""

from __future__ import annotations

import codecs
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from elmo_export.efml import mapping as efml_map  # noqa: E402
from elmo_export.efml import model as efml  # noqa: E402
from elmo_export.efml.model import EfmlError  # noqa: E402
from elmo_runtime.errors import ElmoError  # noqa: E402
from elmo_runtime.format import codepoints  # noqa: E402
from support import efml_random  # noqa: E402


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return efml_random.write_random_model(tmp_path / "m", words=["Haus", "haus"])


def test_reads_a_model_directory(model_dir: Path):
    model = efml.read_model(model_dir)
    assert efml.is_model_dir(model_dir)
    assert model.config.word_dim == 6 and model.words["Haus"] != model.words["haus"]
    assert model.config_file == model_dir / "model_config.json"
    assert efml.n_parameters(model) == sum(a.size for a in model.token_embedder.values()) + sum(
        a.size for a in model.encoder.values())


def test_legacy_serialization_loads(tmp_path: Path, model_dir: Path):
    legacy = efml_random.write_random_model(tmp_path / "legacy", words=["Haus", "haus"],
                                            legacy=True)
    with open(legacy / efml.ENCODER, "rb") as f:
        assert f.read(2) != b"PK"  # not a zip: the old torch format
    a, b = efml.read_model(legacy), efml.read_model(model_dir)
    for name, value in a.encoder.items():
        np.testing.assert_array_equal(value, b.encoder[name])


@pytest.mark.parametrize("missing", [efml.CHAR_DIC, efml.WORD_DIC, efml.TOKEN_EMBEDDER,
                                     efml.ENCODER, efml.CONFIG_FILE, "model_config.json"])
def test_missing_file_is_named(model_dir: Path, missing: str):
    (model_dir / missing).unlink()
    with pytest.raises(EfmlError) as e:
        efml.read_model(model_dir)
    assert missing in str(e.value) or "model_config.json" in str(e.value)
    if missing == "model_config.json":
        assert "--config" in str(e.value)


def test_word_dic_not_needed_without_word_branch(tmp_path: Path):
    d = efml_random.write_random_model(tmp_path / "m", efml_random.small_config(word_dim=0))
    assert not (d / efml.WORD_DIC).exists()
    assert efml.read_model(d).words is None


def test_config_found_as_their_loader_finds_it(tmp_path: Path, model_dir: Path):
    args = json.loads((model_dir / efml.CONFIG_FILE).read_text())
    # an absolute path from the authors' machine: the basename next to the model
    args["config_path"] = "/data/hit-scir/elmo/configs/model_config.json"
    (model_dir / efml.CONFIG_FILE).write_text(json.dumps(args))
    assert efml.find_config(model_dir)[0] == model_dir / "model_config.json"
    # a name their package ships, absent here: their copy
    args["config_path"] = "/x/cnn_50_100_512_4096_sample.json"
    (model_dir / efml.CONFIG_FILE).write_text(json.dumps(args))
    path, config = efml.find_config(model_dir)
    assert path is None and config["encoder"]["dim"] == 4096
    # ...which does not fit this small model: the tensor says so
    with pytest.raises(EfmlError, match=r"embedding.weight' has shape \(6, 6\).*\(6, 100\)"):
        efml.read_model(model_dir)
    # --config wins
    model = efml.read_model(model_dir, config=model_dir / "model_config.json")
    assert model.config.lstm_dim == 12


def test_shipped_config_is_theirs():
    """Our copy of their shipped config equals the package's file (when installed)."""
    pkg = pytest.importorskip("importlib.util").find_spec("elmoformanylangs")
    if pkg is None or not pkg.submodule_search_locations:
        pytest.skip("elmoformanylangs (oracle extra) not installed")
    configs = Path(list(pkg.submodule_search_locations)[0]) / "configs"
    for name, ours in efml.SHIPPED_CONFIGS.items():
        assert json.loads((configs / name).read_text()) == ours


def test_unknown_shipped_name_says_config(model_dir: Path):
    args = json.loads((model_dir / efml.CONFIG_FILE).read_text())
    (model_dir / "model_config.json").unlink()
    args["config_path"] = "/abs/cnn_9_9.json"
    (model_dir / efml.CONFIG_FILE).write_text(json.dumps(args))
    with pytest.raises(EfmlError, match=r"cnn_9_9.json.*--config FILE"):
        efml.read_model(model_dir)


def _resave(path: Path, mutate) -> None:
    state = torch.load(path, weights_only=True)
    mutate(state)
    torch.save(state, path)


def test_wrong_shape_names_tensor_and_both_shapes(model_dir: Path):
    name = "forward_layer_1.state_projection.weight"
    _resave(model_dir / efml.ENCODER, lambda s: s.__setitem__(name, torch.zeros(8, 13)))
    with pytest.raises(EfmlError) as e:
        efml.read_model(model_dir)
    msg = str(e.value)
    assert name in msg and "(8, 13)" in msg and "(8, 12)" in msg and efml.ENCODER in msg


def test_wrong_name_is_named(model_dir: Path):
    def rename(s):
        s["highways._layers.9.weight"] = s.pop("highways._layers.1.weight")

    _resave(model_dir / efml.TOKEN_EMBEDDER, rename)
    with pytest.raises(EfmlError, match=r"highways\._layers\.1\.weight' is missing"):
        efml.read_model(model_dir)


def test_extra_tensor_is_named(model_dir: Path):
    _resave(model_dir / efml.ENCODER, lambda s: s.__setitem__("extra.bias", torch.zeros(3)))
    with pytest.raises(EfmlError, match=r"unexpected tensor 'extra.bias'"):
        efml.read_model(model_dir)


def test_vocab_size_must_match_embedding(model_dir: Path):
    with open(model_dir / efml.WORD_DIC, "a", encoding="utf-8") as f:
        f.write("neu\t6\n")
    with pytest.raises(EfmlError, match=r"word_emb_layer.embedding.weight' has shape \(6, 6\), "
                                        r"the config and vocabularies expect \(7, 6\)"):
        efml.read_model(model_dir)
    with open(model_dir / efml.WORD_DIC, "a", encoding="utf-8") as f:
        f.write("alt\t15\n")
    with pytest.raises(EfmlError, match=r"word\.dic: id 15 is out of range for 8 entries"):
        efml.read_model(model_dir)


class _Payload:
    """Unpickling this would create a file: a test that the loader never runs it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_arbitrary_pickle_is_refused_never_run(tmp_path: Path, model_dir: Path):
    marker = tmp_path / "ran"
    torch.save({"convolutions.0.weight": _Payload(str(marker))}, model_dir / efml.TOKEN_EMBEDDER)
    with pytest.raises(EfmlError, match=r"token_embedder\.pkl: not a plain state dict"):
        efml.read_model(model_dir)
    assert not marker.exists()
    # a plain pickle file (not torch.save) of the same object: refused too
    with open(model_dir / efml.ENCODER, "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    with pytest.raises(EfmlError, match="encoder.pkl"):
        efml.load_state_dict(model_dir / efml.ENCODER)
    assert not marker.exists()


def test_whole_module_pickle_is_refused(model_dir: Path):
    torch.save(torch.nn.Linear(2, 2), model_dir / efml.ENCODER)
    with pytest.raises(EfmlError, match="not a plain state dict"):
        efml.read_model(model_dir)


def test_not_a_state_dict(model_dir: Path):
    torch.save([torch.zeros(2)], model_dir / efml.ENCODER)
    with pytest.raises(EfmlError, match="holds a list, expected a state dict"):
        efml.read_model(model_dir)
    (model_dir / efml.ENCODER).write_bytes(b"not torch at all")
    with pytest.raises(EfmlError, match="encoder.pkl"):
        efml.read_model(model_dir)


def test_duplicate_char_ids_refused(model_dir: Path):
    lines = (model_dir / efml.CHAR_DIC).read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].split("\t")[0] + "\t" + lines[1].split("\t")[1]
    (model_dir / efml.CHAR_DIC).write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(EfmlError, match=r"char\.dic: line 4: id 1 of 'd' is also the id of 'b' "
                                        r"\(line 2\)"):
        efml.read_model(model_dir)


def test_bad_dic_line_is_named(model_dir: Path):
    with open(model_dir / efml.CHAR_DIC, "a", encoding="utf-8") as f:
        f.write("x\ty\tz\n")
    with pytest.raises(EfmlError, match=r"char\.dic: line \d+: expected 'entry<TAB>id'"):
        efml.read_model(model_dir)


def _their_reader(path: Path) -> dict[str, int]:
    """Their package's loop (elmo.Embedder.get_model), verbatim in behaviour."""
    lexicon = {}
    with codecs.open(str(path), "r", encoding="utf-8") as fpi:
        for line in fpi:
            tokens = line.strip().split("\t")
            if len(tokens) == 1:
                tokens.insert(0, "\u3000")
            token, i = tokens
            lexicon[token] = int(i)
    return lexicon


def test_dic_reader_matches_theirs(tmp_path: Path):
    path = tmp_path / "char.dic"
    # whitespace entries become '\u3000'; \x1c and \u2028 split lines as codecs does
    path.write_text("a\t0\n \t1\n5\x1cb\t2\n\u3000\t4\n7\u2028c\t3\nZ\t6\r\n😀\t8\n",
                    encoding="utf-8")
    assert efml.read_dic(path) == _their_reader(path)
    assert efml.read_dic(path)["\u3000"] == 7 and efml.read_dic(path)["c"] == 3
    # a line their reader fails on is refused with its number
    path.write_text("a\t0\nb\x1c\t2\n", encoding="utf-8")
    with pytest.raises(ValueError):
        _their_reader(path)
    with pytest.raises(EfmlError, match=r"char\.dic: line 2: expected 'entry<TAB>id', found 'b'"):
        efml.read_dic(path)


def test_unsupported_variants_refused_by_name(model_dir: Path):
    config = json.loads((model_dir / "model_config.json").read_text())
    for section, value in (("encoder", "lstm"), ("token_embedder", "lstm")):
        bad = json.loads(json.dumps(config))
        bad[section]["name"] = value
        with pytest.raises(EfmlError, match=f"{section} 'lstm' is not supported"):
            efml.parse_config(bad, "cfg")
    bad = json.loads(json.dumps(config))
    bad["token_embedder"]["char_dim"] = 0
    with pytest.raises(EfmlError, match="without the character CNN"):
        efml.parse_config(bad, "cfg")


def test_errors_are_elmo_errors():
    assert issubclass(EfmlError, ElmoError)


def test_code_point_ids():
    chars, words = efml_random.default_vocabs(["Haus", "abc"])
    s = codepoints.CodepointScheme(chars, 7, words)
    shift = codepoints.ID_SHIFT
    ids = s.char_ids(["ab", "abcdefg", "<bos>", "q~"])[:, :6]
    eow, bow, pad, oov = (chars[k] + shift for k in ("<eow>", "<bow>", "<pad>", "<oov>"))
    a, b, c, d, q = (chars[k] + shift for k in "abcdq")
    assert ids[0].tolist() == [eow, a, b, bow, pad, pad]  # swapped markers, as theirs
    assert ids[1].tolist() == [eow, a, b, c, d, chars["e"] + shift]  # cut to 5 code points
    assert s.char_ids(["abcdefg"])[0, 6] == bow
    assert ids[2].tolist() == [eow, chars["<bos>"] + shift, bow, pad, pad, pad]
    assert ids[3].tolist() == [eow, q, oov, bow, pad, pad]
    # the word lookup sees the cut token; case-sensitive; <oov> fallback
    assert s.word_ids(["abcdefg", "Haus", "HAUS", "<eos>"]).tolist() == [
        words["<oov>"], words["Haus"], words["<oov>"], words["<eos>"]]
    cut = codepoints.CodepointScheme(chars, 5, {**words, "abc": len(words)})
    assert cut.word_ids(["abczzz"]).tolist() == [len(words)]  # the cut token's id
    # as in their code, a boundary token cut short (max 6) is plain text
    short = codepoints.CodepointScheme(chars, 6, words).char_ids(["<bos>"])[0]
    assert short[1:6].tolist() == [oov, b, chars["o"] + shift, chars["s"] + shift, bow]


def test_weight_transform_shapes(model_dir: Path):
    model = efml.read_model(model_dir)
    w = efml_map.elmo_weights(model)
    cfg = model.config
    assert w["CNN/W_cnn_2"].shape == (1, 3, cfg.char_dim, 8)
    assert w["CNN_proj/W_proj"].shape == (cfg.word_dim + cfg.n_filters, cfg.projection_dim)
    assert w["RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_0"].shape == (16, 48)
    assert w["word_embed"].shape == (len(model.words), cfg.word_dim)
    assert all(v.dtype == np.float32 for v in w.values())


def test_configs_with_a_bom_are_read(model_dir: Path):
    """Issue 24 item 10: config.json and the model config saved on Windows (UTF-8 BOM)."""
    for name in (efml.CONFIG_FILE, "model_config.json"):
        path = model_dir / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert efml.read_model(model_dir).config.word_dim == 6
