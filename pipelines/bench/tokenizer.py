"""`kdflow bench tokenizer`: the tokenizer inside the served model against the Hugging Face tokenizer it was made from.

    kdflow bench tokenizer --tokenizer MODEL_DIR --data IMDB_FOLDER --max-length 256 --output bench/tokenizer

Every text of the data's test split is tokenized both ways (openvino-tokenizers' conversion, as onnx_export puts it
in model.text.int8.xml, and the Hugging Face tokenizer, truncating at --max-length as data_prep does); the share of
texts with identical ids and, for each text that differs, where and how, go to stdout and OUTPUT/bench_tokenizer.json.
"""

import json
import time
from pathlib import Path

from kdflow.components.common.errors import KdflowInputError

SHOWN = 20  # differing texts printed; the JSON lists them all


def bench_tokenizer(*, tokenizer: str, data: str, output: str, max_length: int = 256) -> dict:
    import pandas
    from transformers import AutoTokenizer

    from kdflow.components.common import text_model

    test = Path(data, "test.parquet")
    if not test.exists():
        raise KdflowInputError(f"{data} holds no test.parquet: give a folder with the test split (a text column).")
    texts = pandas.read_parquet(test, columns=["text"])["text"].tolist()
    hugging_face = AutoTokenizer.from_pretrained(tokenizer)
    start = time.perf_counter()
    agreement = text_model.token_agreement(hugging_face, texts, max_length)
    converted = text_model.compile_model(text_model.convert_tokenizer(hugging_face, max_length))
    differences = [difference(hugging_face, converted, texts[row], row, max_length)
                   for row in agreement.differing_rows]
    result = {"tokenizer": tokenizer, "max_length": max_length, "texts": agreement.rows,
              "identical": agreement.rows - len(differences), "share_identical": agreement.share_equal,
              "differences": differences, "seconds": round(time.perf_counter() - start, 1)}
    Path(output).mkdir(parents=True, exist_ok=True)
    Path(output, "bench_tokenizer.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"{result['identical']} of {result['texts']} test texts have identical token ids "
          f"({result['share_identical']:.4%}) at max_length {max_length}.")
    for shown in differences[:SHOWN]:
        print(f"  row {shown['row']}: from token {shown['position']}, Hugging Face {shown['hugging_face']} "
              f"!= converted {shown['converted']}")
    return result


def difference(tokenizer, converted_model, text: str, row: int, max_length: int) -> dict:
    """Where the Hugging Face tokenizer's and its conversion's (compiled) tokenizations of `text` part, as tokens."""
    from kdflow.components.common import text_model

    outputs = converted_model([text])
    ids, mask = (outputs[converted_model.output(name)][0] for name in text_model.TOKENIZER_INPUTS)
    converted = ids[mask == 1].tolist()
    expected = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    position = next((index for index, (a, b) in enumerate(zip(expected, converted)) if a != b),
                    min(len(expected), len(converted)))
    window = slice(position, position + 5)
    return {"row": row, "position": position, "lengths": [len(expected), len(converted)],
            "hugging_face": tokenizer.convert_ids_to_tokens(expected[window]),
            "converted": tokenizer.convert_ids_to_tokens(converted[window])}
