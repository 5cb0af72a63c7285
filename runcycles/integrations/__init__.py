"""Integrations with LLM provider SDKs and agent frameworks.

Each submodule needs its extra (``pip install 'runcycles[openai]'`` …) and is imported only when used:
``import runcycles`` never imports a provider SDK or framework.
"""
