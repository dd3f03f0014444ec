"""Files carrying provenance, made in the tests: generator text chunks, EXIF, XMP, C2PA manifests
signed with a throwaway CA and end-entity certificate."""

from __future__ import annotations

import datetime as dt
import io
import struct
import zlib

from PIL import Image, PngImagePlugin

from helpers.images import encode, photo

AI_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
EDITED_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_with_text(chunks: dict[str, str], after_idat: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    data = encode(photo(32, 32), "PNG", pnginfo=info)
    if after_idat:
        iend = data.rindex(b"IEND") - 4
        extra = b"".join(png_chunk(b"tEXt", k.encode() + b"\x00" + v.encode()) for k, v in after_idat.items())
        data = data[:iend] + extra + data[iend:]
    return data


def xmp_packet(source_type: str, creator_tool: str = "") -> bytes:
    tool = f' xmp:CreatorTool="{creator_tool}"' if creator_tool else ""
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        f' Iptc4xmpExt:DigitalSourceType="{source_type}"{tool}/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def jpeg_with(software: str | None = None, xmp: bytes | None = None) -> bytes:
    kwargs = {}
    if software:
        exif = Image.Exif()
        exif[0x0131] = software
        kwargs["exif"] = exif
    if xmp:
        kwargs["xmp"] = xmp
    return encode(photo(32, 32, seed=5), "JPEG", quality=90, **kwargs)


class ThrowawayCA:
    """A throwaway CA and an end-entity certificate with digitalSignature + emailProtection."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        def name(cn: str) -> x509.Name:
            return x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aidetect tests"),
                ]
            )

        def usage(**on) -> x509.KeyUsage:
            flags = dict.fromkeys(
                [
                    "digital_signature",
                    "content_commitment",
                    "key_encipherment",
                    "data_encipherment",
                    "key_agreement",
                    "key_cert_sign",
                    "crl_sign",
                    "encipher_only",
                    "decipher_only",
                ],
                False,
            )
            return x509.KeyUsage(**{**flags, **on})

        now = dt.datetime.now(dt.timezone.utc)
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

        def builder(subject, issuer, public):
            return (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(issuer)
                .public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30))
            )

        ca = (
            builder(name("aidetect test CA"), name("aidetect test CA"), ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        leaf = (
            builder(name("aidetect test signer"), ca.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.ca_pem = ca.public_bytes(pem)
        self.chain_pem = leaf.public_bytes(pem) + self.ca_pem
        self.key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def sign(
        self, data: bytes, mime: str, source_type: str = AI_TYPE, tool: str = "Adobe Firefly", later: tuple = ()
    ) -> bytes:
        """A manifest whose c2pa.created action declares `source_type`; `later` adds (action,
        source type) pairs after it, such as an AI edit of a capture."""
        import c2pa

        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(alg=b"es256", sign_cert=self.chain_pem, private_key=self.key_pem, ta_url=None)
        )
        manifest = {
            "claim_generator_info": [{"name": tool, "version": "1.0"}],
            "title": "aidetect test image",
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [{"action": "c2pa.created", "digitalSourceType": source_type, "softwareAgent": tool}]
                        + [{"action": a, "digitalSourceType": t, "softwareAgent": tool} for a, t in later]
                    },
                }
            ],
        }
        context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        out = io.BytesIO()
        c2pa.Builder(manifest, context=context).sign(signer, mime, io.BytesIO(data), out)
        return out.getvalue()
