"""ament_python package definition for blendclip_ros (works with colcon and with pip)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "blendclip_ros"
# Extras (ROS installs take the runtime's own dependencies from package.xml / rosdep).
SIM_REQUIRES = ["numpy", "pillow", "tqdm", "matplotlib"]
TRAIN_REQUIRES = SIM_REQUIRES + ["scipy", "h5py", "tensorboard", "nuscenes-devkit", "truckscenes-devkit"]
# colcon test reads extras_require["test"] (setuptools >= 72 ignores tests_require); keep in step with
# package.xml's test_depend. launch_pytest (ROS 2 launch tests) needs pytest < 8.4.
TEST_REQUIRES = ["pytest<8.4", "pytest-timeout", "hypothesis"]
ONNX_REQUIRES = ["onnx", "onnxruntime", "onnxscript"]

setup(
    name=PACKAGE,
    version="0.1.0",
    # blendclip_ros is the runtime (what a vehicle installs); blendclip_sim (simulated driving data) and
    # blendclip_train (mining, curriculum pretraining, evaluation) ship in the same distribution and
    # need the extras below. The runtime never imports either.
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "blendclip_sim", "blendclip_sim.*",
                                    "blendclip_train", "blendclip_train.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/prompts", glob("config/prompts/*.yaml")),
        (f"share/{PACKAGE}/data/checkpoints", glob("data/checkpoints/*")),
        (f"share/{PACKAGE}/data/demo", glob("data/demo/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="blendclip_ros team",
    maintainer_email="blendclip-ros@example.org",
    description="Open-vocabulary 3D object classification (BlendCLIP) as a ROS 2 node.",
    license="Apache-2.0",
    extras_require={
        "sim": SIM_REQUIRES,
        "train": TRAIN_REQUIRES,
        "test": TEST_REQUIRES,
        "onnx": ONNX_REQUIRES,
    },
    entry_points={
        "console_scripts": [
            "blendclip-classify = blendclip_ros.cli.classify:main",
            "blendclip-prompts = blendclip_ros.cli.prompts:main",
            "blendclip-export = blendclip_ros.cli.export:main",
            "blendclip-classifier = blendclip_ros.ros.classifier_node:main",
            "blendclip-bag-from-nuscenes = blendclip_ros.ros.bag_from_nuscenes:main",
            "blendclip-replay = blendclip_ros.ros.replay:main",
            "blendclip-simulate = blendclip_sim.cli:main",
            "blendclip-train = blendclip_train.cli.train:main",
            "blendclip-evaluate = blendclip_train.cli.evaluate:main",
            "blendclip-mine = blendclip_train.cli.mine:main",
            "blendclip-convert = blendclip_train.cli.convert:main",
            "blendclip-embed = blendclip_train.cli.embed:main",
            "blendclip-experiment = blendclip_train.cli.experiment:main",
            "blendclip-demo = blendclip_ros.demo:main",
        ],
    },
)
