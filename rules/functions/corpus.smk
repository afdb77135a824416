# Helper functions of rules/corpus.smk (kept apart from the rules, as snakemake --lint asks).
#
# Where a corpus lives and what the rules track of it:
#   synthetic            resources/corpora/{corpus}/, made by the checkpoint synthesize_corpus
#   librispeech          resources/corpora/{corpus}/, made by the checkpoint download_librispeech, whose
#                        output is the stamp .download.json. Once the stamp covers the configured subsets
#                        and checksums the rule is left out of the DAG (the corpus is then used in place
#                        like an existing copy): no change of alignments:, of the download code or of
#                        --rerun-triggers can delete or re-download it.
#   librispeech + path:  the existing copy at path:, read only (no rule writes there)
# Consumers take the corpus as an ancient() input (ordering only) and its content through the
# per-split manifest (rule corpus_manifest), whose inputs are the split's audio and transcripts.
from speechdissect.download import DOWNLOAD_STAMP, download_complete
from speechdissect.manifest import alignment_files as _alignment_files
from speechdissect.manifest import check_librispeech_root, split_files


def split_dir(corpus, split):
    """Directory name of a split inside the corpus tree (LibriSpeech subsets for real corpora)."""
    spec = CORPORA[corpus]
    if spec["source"] == "librispeech":
        try:
            return spec["split_map"][split]
        except KeyError:
            raise ValueError(f"config key corpora.{corpus}.split_map has no entry for split {split!r}; "
                             f"it maps {sorted(spec['split_map'])}") from None
    return split


def corpus_root(corpus):
    """The corpus root directory: path: of an existing LibriSpeech copy, else resources/corpora/{corpus}."""
    return CORPORA[corpus].get("path", f"resources/corpora/{corpus}")


def download_subsets(corpus):
    spec = CORPORA[corpus]
    return list(spec.get("subsets") or sorted(set(spec["split_map"].values())))


def _downloads_pending():
    return [c for c in corpora_of_source("librispeech")
            if "path" not in CORPORA[c]
            and not download_complete(corpus_root(c), download_subsets(c), CORPORA[c].get("checksums"))]


LIBRISPEECH_PATH = [c for c in corpora_of_source("librispeech") if "path" in CORPORA[c]]
LIBRISPEECH_DOWNLOAD = _downloads_pending()  # incomplete downloads only: see the header

for _c in LIBRISPEECH_PATH:  # before any job runs: the copy has the subsets split_map names
    check_librispeech_root(corpus_root(_c), sorted(set(CORPORA[_c]["split_map"].values())),
                           key=f"corpora.{_c}.path")


def corpus_input(wildcards):
    """The corpus as an input (for ordering; ancient: its content reaches the jobs through the manifest)."""
    return corpus_input_of(wildcards.corpus)


def corpus_input_of(c):
    if CORPORA[c]["source"] == "librispeech" and "path" not in CORPORA[c]:
        return ancient(f"{corpus_root(c)}/{DOWNLOAD_STAMP}")
    return ancient(corpus_root(c))


def _corpus_ready(corpus):
    """Wait for (or, when planned, depend on) the checkpoint that makes the corpus, before listing its files."""
    source = CORPORA[corpus]["source"]
    if source == "synthetic":
        checkpoints.synthesize_corpus.get(corpus=corpus)
    elif corpus in LIBRISPEECH_DOWNLOAD:
        checkpoints.download_librispeech.get(corpus=corpus)


def corpus_files(wildcards):
    """Audio files, transcripts and speaker tables of one split (the manifest's inputs)."""
    _corpus_ready(wildcards.corpus)
    files = split_files(corpus_root(wildcards.corpus), split_dir(wildcards.corpus, wildcards.split))
    speakers = CORPORA[wildcards.corpus].get("speakers_file")
    return files + ([speakers] if speakers else [])


def alignment_source(wildcards):
    spec = CORPORA[wildcards.corpus]
    if spec["source"] == "librispeech":
        return spec["alignments"]
    return f"resources/corpora/{wildcards.corpus}/alignments"


def alignment_inputs(wildcards):
    """The alignment files the labels are made from: the archive, or every file under the directory."""
    source = alignment_source(wildcards)
    if CORPORA[wildcards.corpus]["source"] == "synthetic":
        _corpus_ready(wildcards.corpus)  # the Festival alignments come with the synthetic corpus
    elif not Path(source).exists():
        raise ValueError(f"config key corpora.{wildcards.corpus}.alignments: {source} does not exist; "
                         "give a directory or .zip/.tar.gz of MFA TextGrids")
    return _alignment_files(source)
