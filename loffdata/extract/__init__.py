"""The producer wing: images -> frozen timm model -> feature maps -> shards.

Needs the ``extract`` extra (timm, pillow, webdataset). Loader users never import it.

Submodules, in the order of the data flow: config, images (shapes), model, plan, batches,
pipeline, sink, finalize, record (runtime, jsonio: shared helpers).
"""

__all__: list[str] = []
