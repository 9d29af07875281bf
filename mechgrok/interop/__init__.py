"""Checkpoints in and out: other tools' formats to mechgrok run directories, and mechgrok models to
TransformerLens.

* :mod:`mechgrok.interop.transformer_lens`: TransformerLens ``HookedTransformer`` state dicts and
  configs, both ways (names, shapes, what mechgrok's transformer can and cannot express), and
  ``mechgrok export``'s folder that TransformerLens 4's ``TransformerBridge.boot_native`` loads.
* :mod:`mechgrok.interop.importer`: ``mechgrok import``: the TransformerLens grokking-demo file, a
  ``HookedTransformer`` state dict, or a folder of per-epoch state dicts with a mapping file, to an
  ordinary run directory. Its parts: :mod:`~mechgrok.interop.formats` (the formats, what a file
  holds, JSON/TOML tables), :mod:`~mechgrok.interop.sources` (what a source holds and the configs
  it implies), :mod:`~mechgrok.interop.mapping` (mapping files) and
  :mod:`~mechgrok.interop.convert` (a source to a run directory).

Pickles: only :func:`mechgrok.interop.importer.load_torch_file` reads a ``torch.save`` file, only
through ``torch.load(weights_only=True)``, and only when the caller passed ``allow_pickle``.
"""

__all__: list[str] = []
