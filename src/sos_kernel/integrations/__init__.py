"""Adapters that put the kernel inside agent frameworks, each behind its own extra.

- :mod:`sos_kernel.integrations.langchain` (``pip install 'sos-kernel[langchain]'``): ``kernel_tools(session)``,
  the kernel's tools as LangChain tools.
- :mod:`sos_kernel.integrations.langgraph` (``pip install 'sos-kernel[langgraph]'``): ``KernelSaver``, a LangGraph
  checkpointer stored in the kernel, and graph nodes that talk over the bus and wait durably for replies.
- :mod:`sos_kernel.integrations.crewai` (``pip install 'sos-kernel[crewai]'``): the same tools as CrewAI tools.
- :mod:`sos_kernel.integrations.a2a` (``pip install 'sos-kernel[a2a]'``): an A2A endpoint for every opted-in agent
  (mounted by ``sos serve``), and ``A2AAgent``, a remote A2A agent as a kernel peer.

Every adapter builds on :mod:`sos_kernel.tools`: one tool table, so a service's declared operations appear in every
framework with no glue. Importing an adapter without its extra raises ``MissingDependency`` naming the pip command.
"""
