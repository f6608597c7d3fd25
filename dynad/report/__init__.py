"""The report layer: the paper's tables and figures, regenerated from the files that the compute steps wrote.

    paths = regenerate("runs", "results", "demo")     # reads runs/demo/<dataset>/<category>/, writes results/demo/
    compare_tables("results_a/demo", "results_b/demo") -> []   # two reproductions, identical tables

    targets.py          the paper's numbers (dynad/targets.yaml) and the names and order of its rows
    runs.py             finding finished runs; the notebooks' markers, fingerprints and folders
    tables.py           one function per table: table1_visa, table2_visa_comparison, table3_btad, main_table,
                        table4_fixed_steps, table5_noiseless_and_adaptation, latent_vs_pixel_space, and the
                        notebooks' per-run tables
    figures.py          one function per figure: figure1_noise_vs_image ... figure8_scaling_vs_step
    reconstructions.py  what the fitted pipeline makes of images (samples, VAE / DIC reconstructions, domain gap)
    format.py           CSV / Markdown / LaTeX with one number format; compare_tables
    regenerate.py       all of the above into results/<preset>/ with a manifest
"""
