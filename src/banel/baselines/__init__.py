"""The paper's baselines (Sections 3 and 5, Appendix B.2-B.4), each a method class stepped by the run like BaNEL."""
