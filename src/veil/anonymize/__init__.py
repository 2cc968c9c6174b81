"""k-anonymity, l-diversity, t-closeness, generalisation hierarchies, masking and pseudonymisation, re-identification risk, and PII redaction in free text (issue: anonymisation and PII redaction).

Empty until the issue that builds it lands; the package exists so the layout of
DESIGN.md holds from the first commit.
"""

__all__: list[str] = []
