"""Synthetic multi-label reviews: seeded, varied, labels exactly read off the text, learnable from word counts."""

import pytest

from kdflow.components.data_prep import synthetic


@pytest.fixture(scope="module")
def rows():
    return synthetic.generate_topics(1000, seed=3)


def topics_in(text: str) -> list[str]:
    """The topics whose subject words the text holds as whole words, in TOPIC_NAMES order."""
    words = set(text.split())
    return [name for name in synthetic.TOPIC_NAMES if words & set(synthetic.TOPIC_SUBJECTS[name])]


def test_topic_reviews_are_seeded_distinct_and_keep_out_excluded_texts(rows):
    assert rows == synthetic.generate_topics(1000, seed=3)
    assert rows["text"] != synthetic.generate_topics(1000, seed=4)["text"]
    assert len(set(rows["text"])) == 1000
    others = synthetic.generate_topics(200, seed=5, exclude=set(rows["text"]))
    assert len(others["text"]) == 200 and not set(others["text"]) & set(rows["text"])
    words = [len(text.split()) for text in rows["text"]]
    assert min(words) <= 15 and 35 <= max(words) <= synthetic.TOPIC_MAX_TARGET_WORDS + 20  # sentences may pass it


def test_each_review_has_one_to_three_topics_in_order(rows):
    for labels in rows["labels"]:
        assert 1 <= len(labels) <= 3
        assert labels == [name for name in synthetic.TOPIC_NAMES if name in labels]  # known, ordered, no repeats


def test_topics_are_spread_and_combined_in_many_ways(rows):
    for name in synthetic.TOPIC_NAMES:
        share = sum(name in labels for labels in rows["labels"]) / len(rows["labels"])
        assert 0.25 <= share <= 0.6, (name, share)
    assert len({tuple(labels) for labels in rows["labels"]}) >= 8


def test_subject_words_belong_to_one_topic_only():
    words = [word for subjects in synthetic.TOPIC_SUBJECTS.values() for word in subjects]
    assert len(words) == len(set(words))


def test_labels_are_exactly_the_topics_named_in_the_text(rows):
    for text, labels in zip(rows["text"], rows["labels"]):
        assert topics_in(text) == labels, text


def test_topic_reviews_are_learnable_from_word_counts():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    train = synthetic.generate_topics(1500, seed=0)
    test = synthetic.generate_topics(500, seed=1, exclude=set(train["text"]))
    binarizer = MultiLabelBinarizer(classes=synthetic.TOPIC_NAMES)
    vectorizer = CountVectorizer()
    model = OneVsRestClassifier(LogisticRegression(max_iter=1000))
    model.fit(vectorizer.fit_transform(train["text"]), binarizer.fit_transform(train["labels"]))
    predicted = model.predict(vectorizer.transform(test["text"]))
    assert f1_score(binarizer.transform(test["labels"]), predicted, average="macro") >= 0.95
