"""The paper's baselines (Sections 3 and 5, Appendix B.2-B.4), each a `run(Run) -> None` like BaNEL's."""
