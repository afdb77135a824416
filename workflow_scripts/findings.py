"""Rule findings: every seed claim tested on the run's own tables -> findings.tsv, findings.md, findings.html."""
from speechdissect.findings import context_from_inputs, findings_html, findings_markdown, findings_table
from speechdissect.labels import write_atomic, write_text_atomic
from speechdissect.logs import setup_logging

log = setup_logging(snakemake.log[0])
p = snakemake.params
ctx = context_from_inputs(".", p.corpus, p.upstreams, snakemake.input.tables, baselines=p.baselines)
table = findings_table(ctx)
for r in table.itertuples():
    log.info("%-34s %-16s %-22s %-14s %s", r.id, r.upstream, f"{r.task}/{r.readout}".strip("/"), r.verdict, r.detail)
write_atomic(snakemake.output.table, lambda tmp: table.to_csv(tmp, sep="\t", index=False, float_format="%.6g"))
write_text_atomic(snakemake.output.markdown, findings_markdown(table))
write_text_atomic(snakemake.output.html, findings_html(table))
