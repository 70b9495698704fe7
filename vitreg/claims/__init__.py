"""The paper's claims: its numbers (``data/paper_numbers.yaml``) and the verdict of every comparison."""
