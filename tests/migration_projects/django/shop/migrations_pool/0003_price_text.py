from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_product_price")]
    operations = [
        migrations.AlterField("product", "price", models.CharField(max_length=20, null=True))
    ]
