"""Scaling laws: plan a training run's size before launching it, and fit the law from your own sweep.

* ``scaling.laws``: the parametric law L(N, D) = E + A / N^alpha + B / D^beta, the published fits
  (Hoffmann et al. 2022 Approach 3, the Epoch AI refit of Besiroglu et al. 2024), the compute-optimal
  allocation in closed form, Kaplan et al.'s allocation, the inference-aware allocation of Sardana et
  al., and how many tokens the project's own corpus holds against the tokens a plan asks for.
* ``scaling.fit``: the Huber fit of the law on a sweep's results (Approach 3), bootstrap intervals, and
  the IsoFLOP minima (Approach 2).
* ``scaling.sweep``: the sweep YAML and the runs of the bundled trainer it launches (resumable).
* ``scaling.plot``: a self-contained SVG of loss against compute with the fitted frontier.
* ``scaling.cli``: ``smelter scaling plan | sweep | fit``.
"""
