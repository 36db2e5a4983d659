"""Falconet: runtime-security alerts for Linux.

This folder is a tree of links: each stage keeps its own top-level folder (the layout in the README is the
architecture), and the links give those folders their import names (`falconet.rules` is `rules/`, ...) in a
form that mypy, editors and setuptools all follow without a custom finder.
"""
