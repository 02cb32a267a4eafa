"""Synthetic movie reviews: a seeded, offline stand-in for IMDb that a tiny model learns in a minute.

A review holds one to three opinions on the side of its label, sometimes fewer opinions of either side, and
neutral sentences around them. An opinion is a cue word, positive or negative, optionally after an
intensifier ("really") and a negation ("not", "never") that flips it: "not boring" counts as positive.
The label is the sign of the opinions' sum after negation; since the plain opinions outnumber all the
others, it is also the sign read without negations. So there are no ties and no label noise, and a tiny
BERT trained from scratch (config:tiny-bert, 3,000 rows, two epochs) reaches about 0.97 test accuracy.
Lengths run from about 8 to 120 words, so padding every batch to its longest row wastes much, as with
real reviews.

Multi-label reviews (`generate_topics`) speak about one to three of the topics in `TOPIC_NAMES` (acting,
story, music, visuals, pacing), each topic on about 40% of rows. A review carries a topic when it holds
opinions, of either side, about that topic's subject words (two per topic); its neutral sentences name only
generic subjects ("movie", "sequel"). So the labels are exactly determined by the text: no label noise. They
run from about 10 to 55 words.
"""

import math
import random
import re

LABEL_NAMES = ["negative", "positive"]

POSITIVE = (
    "good great wonderful excellent brilliant superb enjoyable delightful charming clever funny beautiful "
    "memorable gripping moving"
).split()
NEGATIVE = (
    "bad awful terrible boring dull weak poor predictable tedious clumsy forgettable bland messy silly pointless"
).split()
NEGATIONS = ["not", "never"]
INTENSIFIERS = ["very", "really", "truly", "quite", "so", "extremely", "incredibly", "rather"]

SUBJECTS = (
    "movie film plot story script acting cast ending soundtrack score dialogue direction pacing lead villain "
    "hero cinematography photography editing finale premise sequel characters performances effects humour"
).split()
OPINION_VERBS = ["was", "is", "felt", "seemed", "looked", "sounded", "turned out"]
OPENERS = ["the", "this", "that", "honestly the", "overall the", "i thought the", "to me the", "in the end the"]

# Neutral sentences: templates filled from the lists below, carrying no opinion.
NEUTRAL_TEMPLATES = [
    "i watched it {when} with my {person} .",
    "we saw it at the {place} {when} .",
    "the {subject} runs about {number} minutes .",
    "it was directed by a {origin} director in {year} .",
    "the story takes place in a small {setting} near the {landmark} .",
    "my {person} had read the book before the {subject} came out .",
    "there is a scene with a {thing} and a {thing} in the {setting} .",
    "the {subject} follows a {person} who moves to the {setting} .",
    "it was released in {year} and shown at the {place} .",
    "most of the {subject} was shot in the {setting} during the {season} .",
    "a {person} and a {person} meet at the {landmark} .",
    "i had heard about it from a {person} at the {place} .",
    "the {subject} has {number} scenes set in a {thing} factory .",
    "it is the {ordinal} film by this {origin} studio .",
]
FILLERS = {
    "when": ["yesterday", "last week", "on sunday", "last night", "this morning", "after work"],
    "person": "friend brother sister father mother neighbour cousin colleague teacher student".split(),
    "place": "cinema festival theatre library museum mall".split(),
    "number": "ninety hundred eighty seventy twenty thirty".split(),
    "origin": "french german italian korean american british spanish".split(),
    "year": ["nineteen ninety", "two thousand", "two thousand ten", "nineteen eighty"],
    "setting": "town city village harbour valley desert island house".split(),
    "landmark": "river station bridge mountain market church".split(),
    "thing": "car dog train letter clock piano boat camera".split(),
    "season": "summer winter spring autumn".split(),
    "subject": SUBJECTS,
    "ordinal": "first second third fourth".split(),
}

# Multi-label topics: each subject word belongs to one topic only, so the words in a text give its topics.
TOPIC_SUBJECTS = {
    "acting": "acting cast performances lead villain hero".split(),
    "story": "plot story script ending premise dialogue finale".split(),
    "music": "music soundtrack score songs".split(),
    "visuals": "cinematography photography effects editing costumes".split(),
    "pacing": "pacing rhythm tempo momentum".split(),
}
TOPIC_NAMES = list(TOPIC_SUBJECTS)
TOPIC_WORDS = {word for subjects in TOPIC_SUBJECTS.values() for word in subjects}
GENERIC_SUBJECTS = ["movie", "film", "sequel", "characters", "premiere"]
# Neutral sentences of multi-label reviews must not name a topic, in their templates or in their {subject} slot.
TOPIC_NEUTRAL_TEMPLATES = [template for template in NEUTRAL_TEMPLATES if not TOPIC_WORDS & set(template.split())]
TOPIC_FILLERS = {**FILLERS, "subject": GENERIC_SUBJECTS}
TOPICS_PER_REVIEW = [1, 2, 3]  # uniform, so each of the five topics is on 2/5 of rows

PLAIN_OPINIONS = [1, 2, 3]  # per review, on the side of its label
NEGATED_SHARE = 0.5  # of the other opinions
INTENSIFIED_SHARE = 0.4  # of all opinions
# Review lengths in words: a neutral sentence (up to 13 words) may take a review past its target.
MIN_WORDS, MAX_TARGET_WORDS = 8, 105
# A tiny BERT trained from scratch finds the topics one at a time, each after a plateau. Two opinions per topic shorten
# the plateaus; measured with config:tiny-bert at a constant learning rate of 1e-3, 400 steps of 32 rows, in reviews
# of up to 40 words: macro F1 0.61 with one opinion per topic, 0.84 with two. The shorter reviews are for speed, not
# learning: with one opinion per topic, reviews of up to 105 words gave 0.78 at the same budget.
TOPIC_MAX_TARGET_WORDS = 40
MENTIONS_PER_TOPIC = 2  # opinion sentences per topic of a review, each about one of its subjects


def generate(num_rows: int, seed: int, exclude: set[str] = frozenset()) -> dict[str, list]:
    """`num_rows` distinct reviews with balanced labels (1 positive, 0 negative); the same for the same seed.

    Texts in `exclude` are not produced, so a test set can be kept apart from a training set.
    """
    rng = random.Random(seed)
    labels = [row % 2 for row in range(num_rows)]
    rng.shuffle(labels)
    return {"text": distinct_texts(rng, labels, review, exclude), "label": labels}


def generate_topics(num_rows: int, seed: int, exclude: set[str] = frozenset()) -> dict[str, list]:
    """`num_rows` distinct multi-label reviews, each about 1 to 3 topics; the same for the same seed.

    "labels" holds each review's topic names in `TOPIC_NAMES` order. Texts in `exclude` are not produced.
    """
    rng = random.Random(seed)
    labels = []
    for _ in range(num_rows):
        topics = rng.sample(TOPIC_NAMES, rng.choice(TOPICS_PER_REVIEW))
        labels.append([name for name in TOPIC_NAMES if name in topics])
    return {"text": distinct_texts(rng, labels, topic_review, exclude), "labels": labels}


def distinct_texts(rng: random.Random, labels: list, write, exclude: set[str]) -> list[str]:
    """A text per label by `write(rng, label)`, drawn again while it repeats a text or is in `exclude`."""
    texts, seen = [], set(exclude)
    for label in labels:
        text = write(rng, label)
        while text in seen:
            text = write(rng, label)
        seen.add(text)
        texts.append(text)
    return texts


def review(rng: random.Random, label: int) -> str:
    """One review whose opinions side with `label`, read with or without their negations."""
    plain = rng.choice(PLAIN_OPINIONS)
    sentences = [opinion(rng, label, negated=False) for _ in range(plain)]
    # Fewer other opinions than plain ones, of either side, often negated: they never outvote the label.
    for _ in range(rng.randint(0, plain - 1)):
        sentences.append(opinion(rng, rng.randint(0, 1), negated=rng.random() < NEGATED_SHARE))
    rng.shuffle(sentences)
    return padded(rng, sentences)


def topic_review(rng: random.Random, topics: list[str]) -> str:
    """One review with opinions, of random sides, about subjects of each of `topics` and of no other topic."""
    sentences = [opinion(rng, rng.randint(0, 1), negated=rng.random() < NEGATED_SHARE,
                         subjects=TOPIC_SUBJECTS[topic]) for topic in topics for _ in range(MENTIONS_PER_TOPIC)]
    rng.shuffle(sentences)
    return padded(rng, sentences, TOPIC_NEUTRAL_TEMPLATES, TOPIC_FILLERS, TOPIC_MAX_TARGET_WORDS)


def padded(rng: random.Random, sentences: list[str], templates: list[str] = NEUTRAL_TEMPLATES,
           fillers: dict = FILLERS, max_target_words: int = MAX_TARGET_WORDS) -> str:
    """The sentences with neutral ones inserted among them up to a random target length."""
    # Log-uniform target lengths: many short reviews, a long tail of long ones.
    target = math.exp(rng.uniform(math.log(MIN_WORDS), math.log(max_target_words)))
    while sum(len(sentence.split()) for sentence in sentences) < target:
        sentences.insert(rng.randint(0, len(sentences)), neutral(rng, templates, fillers))
    return " ".join(sentences)


def opinion(rng: random.Random, side: int, negated: bool, subjects: list[str] = SUBJECTS) -> str:
    """A sentence about one of `subjects` whose cue, after its negation if `negated`, is positive when `side` is 1."""
    positive_cue = (side == 1) != negated
    cue = rng.choice(POSITIVE if positive_cue else NEGATIVE)
    words = [rng.choice(OPENERS), rng.choice(subjects), rng.choice(OPINION_VERBS)]
    if rng.random() < INTENSIFIED_SHARE:
        words.append(rng.choice(INTENSIFIERS))
    if negated:
        words.append(rng.choice(NEGATIONS))
    return " ".join([*words, cue, "."])


def neutral(rng: random.Random, templates: list[str] = NEUTRAL_TEMPLATES, fillers: dict = FILLERS) -> str:
    """A sentence with no opinion in it, from one of `templates` with its slots filled from `fillers`."""
    return re.sub(r"\{(\w+)\}", lambda slot: rng.choice(fillers[slot.group(1)]), rng.choice(templates))
