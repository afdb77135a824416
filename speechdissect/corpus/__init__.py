"""Corpora: the embedded synthetic corpus (Festival voices + pseudo-speakers).

See :mod:`speechdissect.corpus.synthesize` for the corpus layout and
:mod:`speechdissect.corpus.festival` for the Festival driver and the
``.segs`` / ``.words`` readers.
"""

from speechdissect.corpus.festival import (
    FestivalError,
    Segment,
    Word,
    parse_segs,
    parse_words,
    read_alignment,
    render_sentences,
)
from speechdissect.corpus.synthesize import (
    VOCABULARY,
    SpeakerSpec,
    make_speakers,
    read_speakers,
    read_utterances,
    synthesize_corpus,
    transform_wave,
)

__all__ = [
    "FestivalError",
    "Segment",
    "Word",
    "parse_segs",
    "parse_words",
    "read_alignment",
    "render_sentences",
    "VOCABULARY",
    "SpeakerSpec",
    "make_speakers",
    "read_speakers",
    "read_utterances",
    "synthesize_corpus",
    "transform_wave",
]
