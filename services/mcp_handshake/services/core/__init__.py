"""What a tool call is: tools, policy, tiers, checks, masking, proofs, sessions, signing."""
