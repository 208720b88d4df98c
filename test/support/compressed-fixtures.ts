/**
 * Corpus files as the real tools pack them (`bzip2 -c`, `zstd -c -q`, `xz -c`; Debian 12), kept as
 * bytes so the tests need none of the tools. `PACKED` holds 600 lines, `line <i> of a corpus that
 * was compressed` joined by "\n", through each; `ZSTD_SHORT`, "one line\n" 500 times through zstd;
 * `ZIP_STORED`, Python's zipfile (ZIP_STORED) of `src.txt`: two lines of text, stored as they are.
 */
export const PACKED: Readonly<Record<'bzip2' | 'zstd' | 'xz', Buffer>> = {
  bzip2: Buffer.from(
    'QlpoOTFBWSZTWTImk/YAGrzZgAAQQAB/4C9n3oBQBf6AAevKUlJVSrgEUNtSb/VKqeqMIAMUAA0AAA0g/1Uk/SqAABoVJp/+' +
    'qUj8qGQaNDAUqqG9RMRmgI8RyqSOYpGQpGYpGQpHv2rtn0+fp+v1+3HYB6eANjQECwWCBoDY8AenYBxQAeqeAOOwD08AbGgI' +
    'FgsEDQGx4A9OwDigA2o0Bx2AengDY0BAsFggaA2PAHp2AcUAEULBx2AengDY0BAsFggaA2PAHp2AcUAFqCBx2AengDY0BAsF' +
    'ggaA2PAHp2AcUAGgNjwB6dgHFAA+lVXXVdVX+1VddV1Vff58r58+fPnz58cdgHp4A2NAQLDWta5znOXd3d3d3d3dgAAAATFo' +
    'iImZmqqrVVVmYcdgHp4A2NBrWtYCV1TAblRgNyowG5UYDcqMBuVGA3KjAblRgNyowG5U7zmOc53vccUAzMzKzMzMHHYB6eBr' +
    'Wteu3d3uVGA3KhkalQyNSoZGpUMjUqGRqVDI1KhkalQyNSpm9783vMzHp2AcUBmZmZWZmYHLxd3eta169du71KhkalQyNSoN' +
    'GZUGjMqDRmVBozKg0ZlQaMypJNSeV1Wb3vet5mY2PAHp2AcUDMzMzKzMzWta5zmHldVJNSeV1Uk1J5XVDRmVA2xKgbYlQNsS' +
    'oG2JUkkud11Uklzuuqze973eZmIGgNjwB6dgHFBl3dhx3XVSSXO66oNsSoG2JUDbEqAVUAqoBVQCqgFVO85znOu97e7u7vd3' +
    'd2DQGx4A9OxeXdg5JJJJAAAAAAAB3nOc3mbzGgIFgsEDQGx4b33e7u7vwAAAAAASSSSSSSTN73veZnuPAGxoCBYLBA0u7ywb' +
    'kkkkkkkkkgAAAAAJzvnnnnne98u8gNjQECwWCBrWtOc5znQAAAAAAAJjGMYwKR6FI7ikfIUjoKR/ikZCkaikaCkdRSMxSPP9' +
    'UkbBSMxSOApGYUjQUjeKRqKRtFI0FI9CkfopHMUj6FI3ikbRSPgUj2LuSKcKEgZE0n7A',
    'base64',
  ),
  zstd: Buffer.from(
    'KLUv/QRYPREApmpZGYBL0gFAiH23RkgFMAPHpJQppZRcwsojGgJiAEsATQDbtm0TERERkTHGGGOMMaSqqqqqioiIiIhoZmZm' +
    'Zub///+3bdu227ZtW5IkSXLbtm0TERERkaK5y0mBSDA4ABhAJBIIhgUEBYEiEfBQNAQUNBQJhwUGBYEioCBQKEaBSDA4CERE' +
    'REREMzMzMzP///+/bdu23bZt25IkSZLbtm2biIiIiMjY2NjY2NjY2NhYVVVVVRURERER0czMzMzM////b9u2bbdt27YkSZLk' +
    'AiVJkiS3bds2EREREZHR0dHR0dHR0dHRqqqqqioiIiIiopmZmZmZ////37Zt227btm1JkiTJbdu2TURERERkcHBwcHBwcHBw' +
    'sKqqqqoqVVVVVVVERERERDMzMzMz////v23btt22bduSJEmS27Ztm4iIiIjI8PDw8PDw8PDwcFVVVVUVEREREdHMzMzMzP//' +
    '/2/btm23bds2gleoIrh7/9/Cz6hWAxL4/19BoIF/f/+693+/f+/99/2/v54Xd8455zn6/n//73f//v73r3//droIIQkhhDj/' +
    '/+333/1/v/v3u/9/xnOec845x9f///39t9//9/797t9PLUIIIYQQ9/6/3/77+9+//v7b/0did9KDrm91uM3h9obbGm5nuI3h' +
    '9gu3LdyucNspDAgAEBACEAIAUAACKI/Jg+Qh8gB58HhwPDQeGA+WxaPi32w2m83mZp35aGUKtwL2glp0',
    'base64',
  ),
  xz: Buffer.from(
    '/Td6WFoAAATm1rRGAgAhARYAAAB0L+Wj4F+oAdpdADYaSh8IoCYDTQad7+2IX/G6KFQrDnEmyFbdwGbt5dM3C2F2xHoZ9Mjk' +
    '99p2hwwi27Oczv+A9yFFEkZ01YLGQyMr7P748iGDygJJOH1mw9VE8Etk7hseazAs9HIM+T2/h/gepE+FTe7P3+B9EZvAPpis' +
    'y+RcuE9DSj+BaW8URvAmi9V3a7aGZEN4qThVqEswjek2k3gYzYkEJuUjXh1ZVgcANRSWlicRgW/UXBAdmo84j2wuW2Pe8Qgl' +
    'OFjCeJnKJSUyA7OIbjquyl5cDh+7/gjstTRMD8yefBqM8Eer+VcXBKPqcTM/oPbK9iy211mCrnVD1Ms/FC/jBgTlTD3PMtT2' +
    'IE7HPjdHrGVuTDb4pCSY8736Ei1PKGncGZ9rG6s3Zl+rud8XtlWherd4DqaKsdLLCJGlLbNJs0jcRBTV7JCIogJCBA4uMp9b' +
    'LMo4Sqsd5ZNSLXl/32+b+BXiPwLOOhpblP1svytv8ZlXfPrGPfaZf3yBm5dbsL3SLPMf6NZxoF8dcZO0CT3UOqXmBUjopd1i' +
    'RIpZDAZXcbhtaMRNC5DZ5K0XC/vniq2wKzd1uaP8Etlk6WOWvHXk6FlKNhgIKw6fdq7jYUWb0SsYVOcRlEbJUR0EOF9x4lE6' +
    'QAAAAHuzfMPDF10BAAH2A6m/AQDqikSgscRn+wIAAAAABFla',
    'base64',
  ),
};

export const ZSTD_SHORT = Buffer.from('KLUv/QRYjQAASG9uZSBsaW5lCgEAiMG+HAFXxCd3', 'base64');

export const ZIP_STORED = Buffer.from(
  'UEsDBBQAAAAAABkUgV3KZYY7KAAAACgAAAAHAAAAc3JjLnR4dGZpcnN0IGxpbmUgb2YgYSB6aXBwZWQgZmlsZQpzZWNvbmQg' +
  'bGluZQpQSwECFAMUAAAAAAAZFIFdymWGOygAAAAoAAAABwAAAAAAAAAAAAAAgAEAAAAAc3JjLnR4dFBLBQYAAAAAAQABADUA' +
  'AABNAAAAAAA=',
  'base64',
);
