"""Packaging for Scrapoxy for Python.

The server lives in the ``server/`` folder but installs as ``scrapoxy_server``: a bare
``server`` package would collide with anything else in site-packages.
"""
from setuptools import find_packages, setup

server_packages = [
    "scrapoxy_server" + name[len("server"):]
    for name in find_packages(include=["server", "server.*"])
]

# Scrapy 2.13 is the first with `async def start()`; CI runs the Scrapy tests on 2.13.0 too
# (SCRAPY_OLDEST in .ci/run): change both together.
SCRAPY_REQUIRES = ["Scrapy>=2.13", "treq>=23.1"]

setup(
    name="scrapoxy-py",
    version="0.1.0",
    description="Rotating proxy pool for scrapers: one proxy address, many upstream instances.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=server_packages + find_packages(include=["scrapoxy_scrapy", "scrapoxy_scrapy.*"]),
    package_dir={"scrapoxy_server": "server"},
    package_data={"scrapoxy_server.commander": ["static/*", "templates/*"]},
    include_package_data=True,
    install_requires=[
        "Twisted>=23.8",
        "pyOpenSSL>=23.0",
        "service_identity>=23.1",  # pyopenssl.extract_patterns (master/tls.py)
        "idna>=3.4",
        "Flask>=2.3",
        "requests>=2.28",
        "prometheus_client>=0.17",
        "boto3>=1.26",
    ],
    extras_require={
        # scrapoxy_scrapy talks to the commander from inside the reactor with treq.
        "scrapy": SCRAPY_REQUIRES,
        "test": [
            *SCRAPY_REQUIRES,
            "pytest>=7.4",
            "pytest-timeout>=2.1",
            "requests-mock>=1.11",
            "moto[ec2]>=5.0",
            # GUI tests drive Debian's chromium (never a downloaded browser).
            "playwright>=1.40",
            # The original Scrapoxy's Python client, for the compatibility test.
            "scrapoxy==1.11",
        ],
    },
    entry_points={
        "console_scripts": [
            "scrapoxy-server=scrapoxy_server.cli:main",
            "scrapoxy-instance=scrapoxy_server.instance.cli:main",
        ],
    },
)
