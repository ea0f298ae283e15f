"""Clean the free text out of Siemens CSA headers, keeping their layout and technical values.

The Siemens CSA image header (0029,xx10) and series header (0029,xx20) under the private creator
``SIEMENS CSA HEADER`` are binary blocks of named items (the "CSA1"/"CSA2" layouts, as read by
nibabel.nicom.csareader and dcm2niix). dcm2niix reads technical items from them (mosaic size,
slice times, b-matrix, phase-encoding direction) and the ``ASCCONV`` part of the series header's
``MrPhoenixProtocol``; the same blocks hold free text that PS3.15's basic profile removes from the
public elements: protocol and sequence names, comments, file names (``tProtocolName``,
``tSequenceFileName``, ``tFree``...), XML protocol dumps.

:func:`clean_csa` returns a blob of the **same length** and layout in which

* items with a numeric value representation (IS, DS, FD, FL, SL, SS, UL, US) are kept, except
  those about the patient (``UsedPatientWeight``...: a dummy 0, as PS3.15 treats patient size);
* text items are kept only for a short list of technical names (:data:`TECHNICAL_TEXT`);
* ``MrPhoenixProtocol`` keeps only its ``ASCCONV`` block, in which every text-typed parameter
  (Siemens names text parameters with a ``t`` prefix) has its value replaced by ``X``;
* every other text byte becomes a space (line breaks and NUL terminators stay).

Anything that does not parse as CSA raises ``ValueError`` (the caller then removes the element).
"""

from __future__ import annotations

import re
import struct

__all__ = ["clean_csa", "TECHNICAL_TEXT"]

MAX_ITEMS = 1000
NUMERIC_VRS = frozenset({"IS", "DS", "FD", "FL", "SL", "SS", "UL", "US", "SV", "UV"})
#: Text items kept as they are: technical values dcm2niix or a reader of the series needs.
TECHNICAL_TEXT = frozenset({
    "ICE_Dims", "ImaCoilString", "ImaPATModeText", "AcquisitionMatrixText", "DiffusionDirectionality",
    "RFSWDDataType", "GSWDDataType", "GradientMode", "FlowCompensation", "CoilForGradient", "CoilForGradient2",
    "SARMostCriticalAspect", "RFSWDMostCriticalAspect", "SafetyStandard", "PhaseEncodingDirectionPositive",
    "SequenceMask", "ImageType4MF", "MrProtocolVersion", "TalesReferencePower",
})
_ASCCONV = re.compile(rb"### ASCCONV BEGIN[^\n]*###(.*?)### ASCCONV END ###", re.S)
_TEXT_PARAM = re.compile(rb"^(\s*)([^\s=]+)(\s*=\s*)(.*)$")


def _blank(buf: bytearray, start: int, stop: int) -> None:
    for i in range(start, stop):
        if buf[i] not in (0x00, 0x0A, 0x0D):
            buf[i] = 0x20


def _is_text_param(key: bytes) -> bool:
    last = re.sub(rb"\[\d+\]", b"", key).split(b".")[-1]
    return len(last) > 1 and last[:1] == b"t" and last[1:2].isupper()


def _clean_phoenix(buf: bytearray, start: int, stop: int) -> None:
    """Keep the ASCCONV block of a MrPhoenixProtocol item (text parameters -> X); blank the rest."""
    text = bytes(buf[start:stop])
    m = _ASCCONV.search(text)
    if m is None:
        _blank(buf, start, stop)
        return
    _blank(buf, start, start + m.start())
    _blank(buf, start + m.end(), stop)
    pos = start + m.start(1)
    for line in m.group(1).split(b"\n"):
        pm = _TEXT_PARAM.match(line)
        if pm and _is_text_param(pm.group(2)):
            v0 = pos + len(pm.group(1)) + len(pm.group(2)) + len(pm.group(3))
            for i in range(v0, pos + len(line)):
                if buf[i] not in (0x22, 0x20, 0x09, 0x0D):  # keep quotes and spacing
                    buf[i] = 0x58  # 'X'
        pos += len(line) + 1


def clean_csa(blob: bytes) -> bytes:
    """The CSA header ``blob`` with its free text removed (same length; see the module docstring)."""
    buf = bytearray(blob)
    n = len(buf)
    if buf[:4] == b"SV10":
        csa_type, ptr = 2, 8
    else:
        csa_type, ptr = 1, 0
    if ptr + 8 > n:
        raise ValueError("CSA header too short")
    n_tags, _check = struct.unpack_from("<2I", buf, ptr)
    ptr += 8
    if not 0 < n_tags <= MAX_ITEMS:
        raise ValueError(f"not a CSA header ({n_tags} tags)")
    tag0_items = 0
    for tag_no in range(n_tags):
        if ptr + 84 > n:
            raise ValueError("CSA header truncated")
        name_b, vm, vr_b, _syngodt, n_items, _last = struct.unpack_from("<64si4s3i", buf, ptr)
        ptr += 84
        name = name_b.split(b"\x00", 1)[0].decode("latin-1")
        vr = vr_b.split(b"\x00", 1)[0].decode("latin-1")
        if tag_no == 1:
            tag0_items = n_items
        if not 0 <= n_items <= MAX_ITEMS:
            raise ValueError(f"CSA tag {name!r}: {n_items} items")
        for _ in range(n_items):
            if ptr + 16 > n:
                raise ValueError("CSA header truncated")
            x0, x1, _x2, _x3 = struct.unpack_from("<4i", buf, ptr)
            ptr += 16
            item_len = x0 - tag0_items if csa_type == 1 else x1
            if item_len < 0 or ptr + item_len > n:
                if csa_type == 1:
                    break
                raise ValueError(f"CSA tag {name!r}: item runs past the end")
            start, stop = ptr, ptr + item_len
            if "patient" in name.lower():  # e.g. UsedPatientWeight: a patient characteristic
                if vr in NUMERIC_VRS and item_len > 0:  # a dummy 0 (PS3.15 'D'): readers parse numbers
                    buf[start:stop] = b"0" + b"\x00" * (item_len - 1)
                else:
                    _blank(buf, start, stop)
            elif vr in NUMERIC_VRS or name in TECHNICAL_TEXT:
                pass
            elif name == "MrPhoenixProtocol":
                _clean_phoenix(buf, start, stop)
            else:
                _blank(buf, start, stop)
            ptr = stop + ((4 - item_len % 4) % 4)
    return bytes(buf)
