"""Image input/output: content-sniffed decoding of every supported format, encoding, previews.

See ``docs/formats.md`` for the format table, the HDR tone-mapping operator and the output rule.
"""

from restora.io.convert import from_float, to_float
from restora.io.decode import as_image, decode, probe_size
from restora.io.encode import (OutputFile, check_encodable, encode, encode_to, make_preview, output_for,
                               output_format_for)
from restora.io.image import Image
from restora.io.limits import Limits
from restora.io.sniff import sniff_format

__all__ = ["Image", "Limits", "OutputFile", "as_image", "check_encodable", "decode", "encode", "encode_to", "from_float", "make_preview",
           "output_for", "output_format_for", "probe_size",
           "sniff_format", "to_float"]
