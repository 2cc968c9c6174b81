"""Third-party reference code, run only by ``veil bench synth``: private-pgm's AIM.

See NOTICE.md (source, commit, the changes made) and LICENSE (Apache-2.0).
Nothing in Veil but :mod:`veil.bench._synth_child` imports it.
"""
