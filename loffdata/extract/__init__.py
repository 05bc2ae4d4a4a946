"""The producer wing: images -> frozen timm model -> feature maps -> shards.

Needs the ``extract`` extra (timm, pillow, webdataset, fire). Loader users never import it.

Submodules: images, pipeline.
"""

__all__: list[str] = []
