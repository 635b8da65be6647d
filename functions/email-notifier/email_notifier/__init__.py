"""email-notifier: renders NotificationTemplates' email sections and sends them over SMTP."""
