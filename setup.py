"""Install the `glip` package; the compiled ops in csrc/ are optional and never block installation."""
from setuptools import find_packages, setup

setup(
    name="glip",
    version="0.1.0",
    description="GLIP: Grounded Language-Image Pre-training, a faithful re-implementation on current PyTorch",
    packages=find_packages(include=["glip", "glip.*"]),
    package_data={"glip": ["assets/*/*"]},
    python_requires=">=3.9",
)
