"""The anomaly assistant: language models that answer from the localizer's findings."""

import logging

OFFLINE_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _OfflineKernelNotice(logging.Filter):
    """Drops bitsandbytes' notice that its optional CPU 4-bit kernel could not be fetched from the hub.

    `import peft` imports bitsandbytes, which on CPUs with AVX512-BF16 tries to download
    that kernel. Offline, as factories and this project's machines are, the download
    fails and bitsandbytes uses its own code; the notice, which advises trusting remote
    code, would only confuse a user who never asked for 4-bit weights.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(OFFLINE_KERNEL_NOTICE)


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_OfflineKernelNotice())
