from twisted.application.service import ServiceMaker

logatron = ServiceMaker(
    "logatron",
    "logsvc.tap",
    "Live per-client logging and a durable append-only journal",
    "logatron",
)
