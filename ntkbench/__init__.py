"""ntkbench: is the neural tangent kernel a good model of real neural networks?"""

__version__ = "0.1.0"
