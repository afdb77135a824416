# Neuron stage: property neurons of FFN layers (Lin et al., 2024), speechdissect/neurons/.
# Settings under `neurons:` in config (docs/neurons_config.md); every key has a default,
# so the stage also runs on a config without the section.

NEURONS = config.get("neurons", {})
NEURON_SPLIT = NEURONS.get("split", "test")
NEURON_CONDITIONS = ["phone", "phone_gender", "phone_pitch"]
NEURON_PROPERTIES = NEURONS.get("properties", ["phone_type", "gender", "pitch"])
NEURON_GEOMETRY = NEURONS.get("geometry", {})
NEURON_FIGURES = NEURONS.get("figures", {})
NEURON_MASKS = NEURONS.get("masks", {})
NEURON_PRUNE_METHODS = NEURON_MASKS.get("methods", ["norm", "protected_norm", "random"])
NEURON_SPARSITIES = [float(s) for s in NEURON_MASKS.get("sparsities", [0.1, 0.2, 0.3, 0.4, 0.5])]
NEURON_REMOVE = NEURON_MASKS.get("remove", list(NEURON_PROPERTIES))
NEURON_PROTECT = NEURON_MASKS.get("protect", list(NEURON_PROPERTIES))
NEURON_RANDOM_DRAWS = int(NEURON_MASKS.get("random_draws", 1))  # random-neuron controls per removal mask


rule neuron_probabilities:
    input:
        cache=lambda wc: cache_dir(wc.upstream, NEURON_SPLIT, wc.corpus),
        labels=f"results/{{corpus}}/labels/{NEURON_SPLIT}.parquet",
        pitch=f"results/{{corpus}}/pitch/{NEURON_SPLIT}.parquet",
    output:
        probs=expand("results/{{upstream}}/{{corpus}}/neurons/probabilities/{condition}.npy", condition=NEURON_CONDITIONS),
        index=expand("results/{{upstream}}/{{corpus}}/neurons/probabilities/{condition}.tsv", condition=NEURON_CONDITIONS),
        stats="results/{upstream}/{corpus}/neurons/probabilities/stats.tsv",
        sample="results/{upstream}/{corpus}/neurons/probabilities/sample.tsv",
        meta="results/{upstream}/{corpus}/neurons/probabilities/meta.json",
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
    params:
        split=NEURON_SPLIT,
        conditions=NEURON_CONDITIONS,
        fraction=NEURONS.get("active_fraction", 0.01),
        pitch_column=NEURONS.get("pitch_column", "pitch_group"),
        min_count=NEURONS.get("min_count", 1),
        chunk_size=NEURONS.get("chunk_size", 1024),
    log:
        "results/logs/neuron_probabilities/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/neuron_probabilities/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/neuron_probabilities.py"


rule property_neurons:
    input:
        probs=expand("results/{{upstream}}/{{corpus}}/neurons/probabilities/{condition}.npy", condition=NEURON_CONDITIONS),
        index=expand("results/{{upstream}}/{{corpus}}/neurons/probabilities/{condition}.tsv", condition=NEURON_CONDITIONS),
        meta="results/{upstream}/{corpus}/neurons/probabilities/meta.json",
    output:
        json="results/{upstream}/{corpus}/neurons/property_neurons.json",
        counts=report("results/{upstream}/{corpus}/neurons/counts.tsv", caption="../report/neuron_counts_table.rst", category="Neurons", subcategory="{upstream}"),
        overlaps="results/{upstream}/{corpus}/neurons/overlaps.tsv",
        neurons="results/{upstream}/{corpus}/neurons/neurons.tsv",
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
    params:
        conditions=NEURON_CONDITIONS,
        properties=NEURON_PROPERTIES,
        sigma=NEURONS.get("sigma", 0.8),
    log:
        "results/logs/property_neurons/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/property_neurons/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/neuron_property.py"


rule neuron_geometry:
    input:
        probs=expand("results/{{upstream}}/{{corpus}}/neurons/probabilities/{condition}.npy", condition=NEURON_CONDITIONS),
        index=expand("results/{{upstream}}/{{corpus}}/neurons/probabilities/{condition}.tsv", condition=NEURON_CONDITIONS),
        json="results/{upstream}/{corpus}/neurons/property_neurons.json",
        meta="results/{upstream}/{corpus}/neurons/probabilities/meta.json",
    output:
        geometry=report("results/{upstream}/{corpus}/neurons/geometry.tsv", caption="../report/neuron_geometry_table.rst", category="Neurons", subcategory="{upstream}"),
        coords="results/{upstream}/{corpus}/neurons/mds_coords.tsv",
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
    params:
        conditions=NEURON_CONDITIONS,
        properties=NEURON_PROPERTIES,
        neuron_sets=NEURON_GEOMETRY.get("neuron_sets", ["all", "property"]),
        representation=NEURON_GEOMETRY.get("representation", "binary"),
        n_init=NEURON_GEOMETRY.get("n_init", 4),
        max_iter=NEURON_GEOMETRY.get("max_iter", 300),
        seed=SEED,
    log:
        "results/logs/neuron_geometry/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/neuron_geometry/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/neuron_geometry.py"


rule neuron_figures:
    input:
        probs="results/{upstream}/{corpus}/neurons/probabilities/phone.npy",
        index="results/{upstream}/{corpus}/neurons/probabilities/phone.tsv",
        meta="results/{upstream}/{corpus}/neurons/probabilities/meta.json",
        counts="results/{upstream}/{corpus}/neurons/counts.tsv",
        geometry="results/{upstream}/{corpus}/neurons/geometry.tsv",
    output:
        sorted_png=report("results/{upstream}/{corpus}/neurons/figures/sorted_probabilities.png", caption="../report/neuron_sorted_probabilities.rst", category="Neurons", subcategory="{upstream}"),
        sorted_svg="results/{upstream}/{corpus}/neurons/figures/sorted_probabilities.svg",
        counts_png=report("results/{upstream}/{corpus}/neurons/figures/counts.png", caption="../report/neuron_counts.rst", category="Neurons", subcategory="{upstream}"),
        counts_svg="results/{upstream}/{corpus}/neurons/figures/counts.svg",
        silhouette_png=report("results/{upstream}/{corpus}/neurons/figures/silhouette.png", caption="../report/neuron_silhouette.rst", category="Neurons", subcategory="{upstream}"),
        silhouette_svg="results/{upstream}/{corpus}/neurons/figures/silhouette.svg",
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
    params:
        phone=NEURON_FIGURES.get("phone", "AH"),
    log:
        "results/logs/neuron_figures/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/neuron_figures/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/neuron_figures.py"


rule neuron_mds_figure:
    input:
        coords="results/{upstream}/{corpus}/neurons/mds_coords.tsv",
        geometry="results/{upstream}/{corpus}/neurons/geometry.tsv",
    output:
        png=report("results/{upstream}/{corpus}/neurons/figures/mds_{property}.png", caption="../report/neuron_mds.rst", category="Neurons", subcategory="{upstream}"),
        svg="results/{upstream}/{corpus}/neurons/figures/mds_{property}.svg",
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
        property=one_of(NEURON_PROPERTIES),
    params:
        neuron_set=NEURON_FIGURES.get("mds_neuron_set", "all"),
    log:
        "results/logs/neuron_mds_figure/{upstream}/{corpus}/{property}.log",
    benchmark:
        "results/benchmarks/neuron_mds_figure/{upstream}/{corpus}/{property}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/neuron_mds_figure.py"


rule neuron_masks:
    input:
        unpack(upstream_inputs),
        json="results/{upstream}/{corpus}/neurons/property_neurons.json",
    output:
        masks=expand("results/{{upstream}}/{{corpus}}/neurons/masks/{name}.json", name=neuron_mask_names()),
        table="results/{upstream}/{corpus}/neurons/masks/masks.tsv",
    wildcard_constraints:
        upstream=one_of(list(UPSTREAMS)),
    params:
        names=neuron_mask_names(),
        removals={removal_method(e): e for e in NEURON_REMOVE},
        random_removals={removal_method(e): random_removal_names(e) for e in NEURON_REMOVE},
        prune=[{"method": m, "sparsity": s, "name": f"{m}_{fraction_tag(s)}"} for m in NEURON_PRUNE_METHODS for s in NEURON_SPARSITIES],
        protect=NEURON_PROTECT,
        criterion=NEURON_MASKS.get("criterion", "group"),
        norm_order=float(NEURON_MASKS.get("norm_order", 1)),
        strict=NEURON_MASKS.get("strict", False),
        seed=SEED,
    log:
        "results/logs/neuron_masks/{upstream}/{corpus}.log",
    benchmark:
        "results/benchmarks/neuron_masks/{upstream}/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/models.yaml"
    script:
        "../workflow_scripts/neuron_masks.py"


rule neuron_models_figure:
    input:
        counts=lambda wc: [f"results/{u}/{wc.corpus}/neurons/counts.tsv" for u in ANALYSIS_UPSTREAMS],
        geometry=lambda wc: [f"results/{u}/{wc.corpus}/neurons/geometry.tsv" for u in ANALYSIS_UPSTREAMS],
        meta=lambda wc: [f"results/{u}/{wc.corpus}/neurons/probabilities/meta.json" for u in ANALYSIS_UPSTREAMS],
    output:
        table=report("results/neurons/{corpus}/models.tsv", caption="../report/neuron_models_table.rst", category="Neurons", subcategory="models side by side"),
        png=report("results/neurons/{corpus}/models.png", caption="../report/neuron_models.rst", category="Neurons", subcategory="models side by side"),
        svg="results/neurons/{corpus}/models.svg",
    params:
        upstreams=ANALYSIS_UPSTREAMS,
        properties=NEURON_PROPERTIES,
        neuron_set=NEURON_FIGURES.get("mds_neuron_set", "all"),
    log:
        "results/logs/neuron_models_figure/{corpus}.log",
    benchmark:
        "results/benchmarks/neuron_models_figure/{corpus}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/neuron_models_figure.py"


rule neuron_editing_summary:
    input:
        results=lambda wc: neuron_editing_results(wc.upstream),
        masks=f"results/{{upstream}}/{ANALYSIS_CORPUS}/neurons/masks/masks.tsv",
    output:
        editing=report("results/{upstream}/neuron_editing/editing.tsv", caption="../report/neuron_editing_table.rst", category="Neurons", subcategory="{upstream}: editing and pruning"),
        editing_png=report("results/{upstream}/neuron_editing/editing.png", caption="../report/neuron_editing.rst", category="Neurons", subcategory="{upstream}: editing and pruning"),
        editing_svg="results/{upstream}/neuron_editing/editing.svg",
        pruning=report("results/{upstream}/neuron_editing/pruning.tsv", caption="../report/neuron_pruning_table.rst", category="Neurons", subcategory="{upstream}: editing and pruning"),
        pruning_png=report("results/{upstream}/neuron_editing/pruning.png", caption="../report/neuron_pruning.rst", category="Neurons", subcategory="{upstream}: editing and pruning"),
        pruning_svg="results/{upstream}/neuron_editing/pruning.svg",
    wildcard_constraints:
        upstream=one_of(config.get("pruning", {}).get("upstreams", [])),
    log:
        "results/logs/neuron_editing_summary/{upstream}.log",
    benchmark:
        "results/benchmarks/neuron_editing_summary/{upstream}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/neuron_editing_summary.py"
