# Helper functions of rules/corpus.smk (kept apart from the rules, as snakemake --lint asks).


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



def alignment_source(wildcards):
    spec = CORPORA[wildcards.corpus]
    if spec["source"] == "librispeech":
        return spec["alignments"]
    return f"resources/corpora/{wildcards.corpus}/alignments"
