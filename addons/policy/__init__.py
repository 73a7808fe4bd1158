"""Policy: the addon that classifies, masks, blocks or holds, the body decoding it reads through, the rule files in force, and the outcome of a whole call."""
