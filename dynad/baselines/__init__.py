"""Reconstruction-free peers computed beside DynAD in every run (`metrics.json["baselines"]`).

    knn_distance  DIC's own kNN distance y_bar (Algorithm 2) used as the image score: image AUROC only
    patch_knn     a PatchCore-style patch kNN on the same backbone and resolution (dynad/baselines/patch_knn.py)
"""
