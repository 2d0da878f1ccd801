"""Character classes for text that comes from outside (uploads, forms, pasted text)."""

import re

# C0 controls but tab and line breaks, and DEL: no file we read or write wants them
# (Word's pasted line break is U+000B).
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
