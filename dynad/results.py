"""The names the notebooks, `dynad reproduce` and the benchmarks call, from the report layer (dynad/report/).

    from dynad import results
    results.regenerate("runs", "results", "demo")
"""

from dynad.report.figures import ablation_plot, image_grid, localization_plot, t_hat_by_defect_plot
from dynad.report.format import compare_tables, write_table
from dynad.report.reconstructions import dic_reconstructions, feature_gap, sample_images, vae_reconstructions
from dynad.report.regenerate import regenerate
from dynad.report.runs import (
    ensure_data, eval_fingerprint, inputs_fingerprint, marker_matches, models_dir_for, read_marker, write_marker,
)  # fmt: skip
from dynad.report.tables import (
    ablation_tables, bin_table, category_metrics, dataset_metrics, feature_gap_table, knn_binning, localization_table,
    peers_table, t_hat_by_defect,
)  # fmt: skip
from dynad.report.targets import load_targets

__all__ = [
    "ablation_plot", "ablation_tables", "bin_table", "category_metrics", "compare_tables", "dataset_metrics",
    "dic_reconstructions", "ensure_data", "eval_fingerprint", "feature_gap", "feature_gap_table", "image_grid",
    "inputs_fingerprint", "knn_binning", "load_targets", "localization_plot", "localization_table",
    "marker_matches", "models_dir_for", "peers_table", "read_marker", "regenerate", "sample_images",
    "t_hat_by_defect", "t_hat_by_defect_plot", "vae_reconstructions", "write_marker", "write_table",
]  # fmt: skip
