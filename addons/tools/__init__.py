"""Tools: pinned MCP tool definitions, checked on every listing and tool call
(`toolgate.rules.toolpins`)."""
