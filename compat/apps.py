from django.apps import AppConfig


class CompatConfig(AppConfig):
    name = "compat"
    verbose_name = "Compatibility (DeepStack, Rekognition)"
    default_auto_field = "django.db.models.BigAutoField"
