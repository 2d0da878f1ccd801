"""Membership fees: schedule, KID, invoices, OCR giro import, reminders, dashboard."""
